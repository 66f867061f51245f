"""Counting what the spool lost, once per record, however many sinks are told about it."""

from __future__ import annotations

from forwarder.spool.catch_up import SinkCatchUp
from forwarder.spool.writer import SpoolStats
from forwarder.telemetry.events import Emitter


class SpoolLossCounts:
    """Gap events per sink, and ``records_lost_total`` for ``spool_full`` and ``spool_corrupt``."""

    def __init__(self, emit: Emitter) -> None:
        self._emit = emit
        self._evicted_counted = 0
        self._corrupt_counted: set[tuple[str, int, int]] = set()

    def catch_up_gaps(self, name: str, catch_up: SinkCatchUp) -> None:
        """Count the gap events ``catch_up`` emitted since the last call."""
        emit = self._emit
        for reason, lost_range in catch_up.gap_reports:
            emit.gap_emitted(name, reason)
            # A quarantined range is counted once, however many sinks are told about it
            # (spool_full is counted when evicted, from the spool's own figure).
            if reason == "spool_corrupt" and lost_range not in self._corrupt_counted:
                assert lost_range is not None
                self._corrupt_counted.add(lost_range)
                _, first, last = lost_range
                emit.records_lost(reason, first, last, last - first + 1)
        catch_up.gap_reports.clear()

    def evictions(self, stats: SpoolStats) -> None:
        """Count the records evicted since the last call that some sink still needed."""
        evicted = stats.evicted_records
        if evicted > self._evicted_counted and self._emit.metrics is not None:
            lost = evicted - self._evicted_counted
            self._emit.metrics.records_lost.labels("spool_full").inc(lost)
        self._evicted_counted = evicted
