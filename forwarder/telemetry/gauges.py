"""Gauges sampled once a second: queue depths, checkpoint lag, capture buffer, clock drift."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from forwarder.delivery.worker import SinkWorker
from forwarder.reader import Reader
from forwarder.routing import Router
from forwarder.source.capture import Capture
from forwarder.telemetry.metrics import Metrics

CLOCK_CHECK_INTERVAL_S = 30.0


class GaugeSampler:
    """Samples the running server's state into gauges."""

    def __init__(
        self,
        metrics: Metrics,
        workers: Mapping[str, SinkWorker],
        capture: Capture,
        router: Router,
        reader: Reader,
        clock_offset_ns: Callable[[], int],
    ) -> None:
        self.metrics = metrics
        self._workers = workers
        self._capture: Capture | None = capture
        self._router: Router | None = router
        self._reader = reader
        self._clock_offset_ns = clock_offset_ns

    async def run(self) -> None:
        """Sample every second until cancelled."""
        last_clock_check = time.monotonic()
        while True:
            await asyncio.sleep(1)
            newest = self._reader.last_seq_read
            for name, worker in self._workers.items():
                self.metrics.buffer_records.labels(name).set(worker.batcher.depth)
                if worker.health.checkpoint_seq is not None:
                    lag = max(0, int(newest) - worker.health.checkpoint_seq)
                    self.metrics.checkpoint_lag.labels(name).set(lag)
            if self._capture is not None:
                self.metrics.buffer_bytes.set(self._capture.buffered_bytes)
            if time.monotonic() - last_clock_check > CLOCK_CHECK_INTERVAL_S and self._router:
                last_clock_check = time.monotonic()
                drift = self._clock_offset_ns() - self._router.identity.clock_offset_ns
                self.metrics.clock_offset_drift.set(drift / 1e9)
