"""The catalogue of what the forwarder reports about itself: one named method per event.

Each event logs once (structlog, under its own name) and counts once (the metrics of
``metrics.py``), so a call site says what happened and never pairs a counter with a log line
by hand (Vector's ``internal_events``). Routine events (a batch delivered, a checkpoint
moved) only count; events an operator must see also log. Without a metrics listener the
emitter has no :class:`Metrics` (nothing could read them, and prometheus_client is never
imported): events still log, counting is skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import structlog

from forwarder.source.parser import facility_name, level_name

if TYPE_CHECKING:
    from forwarder.sinks.outcome import Rejection
    from forwarder.telemetry.metrics import Metrics

log = structlog.get_logger("forwarder")
CLOCK_DRIFT_WARN_NS: Final = 1_000_000_000


class Emitter:
    """Emits the forwarder's events; counts them into ``metrics`` when there are any."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics
        self._kernel_event_counters: dict[tuple[str, str, str], Any] = {}

    # -- lifecycle -------------------------------------------------------------------

    def started(
        self,
        source: str,
        boot_id: str,
        sinks: Iterable[str],
        capture_pid: int | None,
        resume: Mapping[str, int | None],
    ) -> None:
        """The source is open and the capture process runs."""
        log.info(
            "started",
            source=source,
            boot_id=boot_id,
            sinks=sorted(sinks),
            capture_pid=capture_pid,
            resume=dict(resume),
        )

    def stopping(self) -> None:
        """The first SIGTERM/SIGINT: capture stops, what is buffered is delivered."""
        log.info("stopping")

    def second_signal(self, signal_name: str) -> None:
        """A second signal during the drain: exit now (cleanup still runs)."""
        log.warning("second_signal_exit_now", signal=signal_name)

    def shutdown_timeout(self, timeout_s: float) -> None:
        """The drain did not finish within ``shutdown_timeout_s``."""
        log.warning(
            "shutdown_timeout",
            timeout_s=timeout_s,
            hint="undelivered records stay above the checkpoint and are re-read at start",
        )

    def stopped(self, *, source_ended: bool) -> None:
        """The server has shut down."""
        log.info("stopped", source_ended=source_ended)

    # -- the source ------------------------------------------------------------------

    def records_read(self, prefixes: Sequence[int]) -> None:
        """Records read, by facility and level (``prefixes``: ``facility << 3 | level``)."""
        if self.metrics is None:
            return
        counter = self.metrics.records_read
        # Counted once per chunk: per-record metric calls cost more than parsing.
        for prefix, count in Counter(prefixes).items():
            counter.labels(facility_name(prefix >> 3), level_name(prefix & 7)).inc(count)

    def last_seq_read(self, seq: int) -> None:
        """The seq of the newest record read."""
        if self.metrics is not None:
            self.metrics.last_seq_read.set(seq)

    def records_lost(self, reason: str, first_seq: int, last_seq: int, lost: int) -> None:
        """Records the kernel overwrote (or a reboot took) before they were read."""
        if self.metrics is not None:
            self.metrics.records_lost.labels(reason).inc(lost)
        log.warning(
            "records_lost", reason=reason, first_seq=first_seq, last_seq=last_seq, lost=lost
        )

    def gap_emitted(self, sink: str, reason: str) -> None:
        """A gap event went into a sink's stream (its loss is logged as ``records_lost``)."""
        if self.metrics is not None:
            self.metrics.gap_events.labels(sink, reason).inc()

    def overrun(self) -> None:
        """``read()`` gave EPIPE: the ring wrapped past the reader."""
        if self.metrics is not None:
            self.metrics.overruns.inc()

    def record_too_large(self) -> None:
        """``read()`` gave EINVAL: a record larger than the read buffer was lost."""
        log.warning("record_too_large", hint="a record larger than 16 KiB was lost")

    def parse_error(self, error: Exception) -> None:
        """A raw record that is not a kmsg record (skipped)."""
        if self.metrics is not None:
            self.metrics.parse_errors.inc()
        log.warning("parse_error", error=str(error))

    def record_rejected(self, reason: str) -> None:
        """The capture process dropped a dump record no kernel writes (logged in aggregate)."""
        if self.metrics is not None:
            self.metrics.records_rejected.labels(reason).inc()

    def records_rejected(self, counts: Mapping[str, int]) -> None:
        """The rejections since the last such line, by reason (one line per interval)."""
        log.warning(
            "records_rejected",
            counts=dict(counts),
            hint="the dump holds lines no kernel writes (a raw NUL byte, or longer than "
            "8192 bytes); they are dropped",
        )

    def record_failed(self, seq: int | None, error: str, dead_letter: str) -> None:
        """Handling one record raised something unexpected; it went to the dead-letter file."""
        if self.metrics is not None:
            self.metrics.records_failed.inc()
        log.error(
            "record_failed",
            seq=seq,
            error=error,
            dead_letter=dead_letter,
            hint="the record is set aside and the forwarder goes on; please report this bug",
        )

    def clock_offset_drift(self, drift_ns: int) -> None:
        """The current realtime - monotonic offset minus the boot's stored one."""
        if self.metrics is not None:
            self.metrics.clock_offset_drift.set(drift_ns / 1e9)

    def boot_clock_offset_checked(self, drift_ns: int) -> None:
        """At start: the drift from the stored offset, with a warning when it exceeds 1 s."""
        self.clock_offset_drift(drift_ns)
        if abs(drift_ns) > CLOCK_DRIFT_WARN_NS:
            log.warning(
                "clock_offset_changed",
                drift_s=round(drift_ns / 1e9, 3),
                hint="suspend or a wall-clock step since this boot's first record was "
                "shipped; timestamps keep the stored offset so re-sent records match",
            )

    # -- kernel events ---------------------------------------------------------------

    def kernel_event(self, class_name: str, kind: str, severity: str) -> None:
        """A kernel event was emitted for the first time (not one re-read after a restart)."""
        if self.metrics is None:
            return
        labels = (class_name, kind, severity)
        # labels() costs more than the rest of an event's bookkeeping: keep each child.
        counter = self._kernel_event_counters.get(labels)
        if counter is None:
            counter = self.metrics.kernel_events.labels(*labels)
            self._kernel_event_counters[labels] = counter
        counter.inc()

    def kernel_event_failed(self, seq: int, error: str) -> None:
        """The classifier raised on a record or a flush (a bug): skipped, the records still ship."""
        if self.metrics is not None:
            self.metrics.kernel_event_errors.inc()
        log.error(
            "kernel_event_failed",
            seq=seq,
            error=error,
            hint="the record still ships; no kernel event comes of it; please report this bug",
        )

    def kernel_event_dropped(self, sink: str) -> None:
        """A kernel event made live for a lagging sink found 10,000 others waiting: dropped."""
        if self.metrics is not None:
            self.metrics.kernel_events_dropped.labels(sink).inc()
        log.warning(
            "kernel_event_dropped_while_lagging",
            sink=sink,
            hint="the sink has lagged long beside a noisy kernel; its records still arrive",
        )

    # -- delivery ----------------------------------------------------------------------

    def checkpoint(self, sink: str, seq: int) -> None:
        """A sink's checkpoint (loaded at start, or saved after a confirmed batch)."""
        if self.metrics is not None:
            self.metrics.checkpoint_seq.labels(sink).set(seq)

    def records_filtered(self, sink: str, count: int) -> None:
        """Events the sink does not take (``min_level``, its ``events``), checkpointed."""
        if self.metrics is not None:
            self.metrics.records_filtered.labels(sink).inc(count)

    def records_sent(self, sink: str, count: int) -> None:
        """Events the receiver confirmed."""
        if self.metrics is not None:
            self.metrics.records_sent.labels(sink).inc(count)

    def records_duplicate(self, sink: str, count: int) -> None:
        """Events the receiver already had (e.g. Elasticsearch 409)."""
        if self.metrics is not None:
            self.metrics.records_duplicate.labels(sink).inc(count)

    def batch_delivered(self, sink: str, latency_s: float) -> None:
        """A batch (or a split part) is settled: time from its first send."""
        if self.metrics is not None:
            self.metrics.batch_latency.labels(sink).observe(latency_s)

    def batch_split(self, sink: str) -> None:
        """The receiver found a batch too large; it is sent again in two halves."""
        if self.metrics is not None:
            self.metrics.batch_splits.labels(sink).inc()

    def rejected_by_receiver(self, sink: str, rejections: Sequence[Rejection]) -> None:
        """The receiver refused events for good; they went to the dead-letter file."""
        if self.metrics is not None:
            counter = self.metrics.records_dead_lettered
            for rejection in rejections:
                counter.labels(sink, rejection.reason).inc()
        log.error(
            "rejected_by_receiver",
            sink=sink,
            events=len(rejections),
            reasons=sorted({rejection.reason for rejection in rejections}),
            first_detail=rejections[0].detail,
        )

    def dead_lettered(self, sink: str, reason: str, detail: str, events: int) -> None:
        """Events given up on (retry budget spent, or too large alone) went to dead letters."""
        if self.metrics is not None:
            self.metrics.records_dead_lettered.labels(sink, reason).inc(events)
        log.error("dead_lettered", sink=sink, reason=reason, detail=detail, events=events)

    def sink_retry(self, sink: str, verdict: str, error: str, wait_s: float) -> None:
        """A failed attempt that will be retried after ``wait_s``."""
        if self.metrics is not None:
            self.metrics.sink_retries.labels(sink).inc()
        log.warning("sink_retry", sink=sink, verdict=verdict, error=error, wait_s=round(wait_s, 3))

    def sink_failing(self, sink: str) -> None:
        """The sink's latest attempt stored nothing."""
        if self.metrics is not None:
            self.metrics.sink_up.labels(sink).set(0)

    def sink_delivering(self, sink: str, *, recovered: bool) -> None:
        """The sink's latest attempt stored something (``recovered``: after failing)."""
        if self.metrics is not None:
            self.metrics.sink_up.labels(sink).set(1)
        if recovered:
            log.info("sink_recovered", sink=sink)
