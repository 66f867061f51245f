"""Gauges sampled once a second: queue depths, checkpoint lag, capture buffer, clock drift.

Runs only with metrics (a ``[metrics] listen``): nothing else reads these gauges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Final

from forwarder.delivery.worker import SinkWorker
from forwarder.reader import Reader
from forwarder.source.capture import Capture
from forwarder.telemetry.metrics import Metrics

SAMPLE_INTERVAL_S: Final = 1.0
CLOCK_CHECK_INTERVAL_S: Final = 30.0


class GaugeSampler:
    """Samples the running server's state into gauges."""

    def __init__(
        self,
        metrics: Metrics,
        workers: Mapping[str, SinkWorker],
        capture: Capture,
        reader: Reader,
        *,
        clock_offset_ns: int,
        clock_offset_now_ns: Callable[[], int],
    ) -> None:
        self._metrics = metrics
        self._workers = workers
        self._capture = capture
        self._reader = reader
        self._clock_offset_ns = clock_offset_ns
        self._clock_offset_now_ns = clock_offset_now_ns

    async def run(self) -> None:
        """Sample every second until cancelled."""
        metrics = self._metrics
        last_clock_check = time.monotonic()
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            newest = self._reader.last_seq_read
            for name, worker in self._workers.items():
                metrics.buffer_records.labels(name).set(worker.batcher.depth)
                if worker.health.checkpoint_seq is not None:
                    lag = max(0, newest - worker.health.checkpoint_seq)
                    metrics.checkpoint_lag.labels(name).set(lag)
            metrics.buffer_bytes.set(self._capture.buffered_bytes)
            if time.monotonic() - last_clock_check > CLOCK_CHECK_INTERVAL_S:
                last_clock_check = time.monotonic()
                drift = self._clock_offset_now_ns() - self._clock_offset_ns
                metrics.clock_offset_drift.set(drift / 1e9)
