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
from forwarder.spool.feeds import SpoolFeeds
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
        feeds: SpoolFeeds | None = None,
    ) -> None:
        self._metrics = metrics
        self._feeds = feeds
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
            if self._feeds is not None:
                self._sample_spool(self._feeds)
            if time.monotonic() - last_clock_check > CLOCK_CHECK_INTERVAL_S:
                last_clock_check = time.monotonic()
                drift = self._clock_offset_now_ns() - self._clock_offset_ns
                metrics.clock_offset_drift.set(drift / 1e9)

    def _sample_spool(self, feeds: SpoolFeeds) -> None:
        metrics, spool = self._metrics, feeds.spool
        stats = spool.stats
        metrics.spool_bytes.set(spool.total_bytes())
        metrics.spool_segments.set(sum(len(boot.segments) for boot in spool.boots))
        metrics.spool_degraded.set(1 if spool.unwritable else 0)
        metrics.spool_memory_bytes.set(spool.record_bytes_pending())
        oldest = next((b.oldest_seq() for b in spool.boots if b.oldest_seq() is not None), None)
        metrics.spool_oldest_seq.set(-1 if oldest is None else oldest)
        current = spool.current
        newest = current.tail_seq if current is not None else None
        metrics.spool_newest_seq.set(-1 if newest is None else newest)
        for name in self._workers:
            metrics.spool_lag_records.labels(name).set(feeds.lag_records(name))
        for counter, value in (
            (metrics.spool_records_appended, stats.appended_records),
            (metrics.spool_write_errors, stats.write_errors),
            (metrics.spool_truncated_bytes, stats.truncated_bytes),
            (metrics.spool_corrupt_segments, stats.corrupt_segments),
            (metrics.spool_fsyncs, stats.fsyncs),
            (metrics.spool_fsync_seconds, stats.fsync_seconds),
        ):
            counter.inc(max(0, value - counter._value.get()))  # noqa: SLF001 - mirror a total
