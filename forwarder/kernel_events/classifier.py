"""KernelEventClassifier: records in, kernel events out (SPEC.md sections 1.3, 1.4).

Feed every parsed record in seq order; ``feed`` returns the events that closed. Only
facility kern is classified (user space cannot write it, so a user-written "Killed
process" line is never an event). Open reports are offered each kern record newest
first; a record no open report takes may open a new one. Reports close on their end
marker, a new start of the same class and key, 2 s of ``ts_usec`` (ATA EH: 40 s; any
record's time counts, see :meth:`advance`) or 200 records without a member, and at
:meth:`flush`. :meth:`flush_idle` is the wall-clock flush for a live device that went quiet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from forwarder.kernel_events.catalogue import detect
from forwarder.kernel_events.crashes import OopsReport, WarningReport
from forwarder.kernel_events.model import KernelEvent
from forwarder.kernel_events.report import (
    MAX_IDLE_RECORDS,
    QUIET_USEC,
    Report,
    SingleReport,
    Verdict,
)
from forwarder.kernel_events.rules import UserRule
from forwarder.source.parser import Record

IDLE_FLUSH_S = QUIET_USEC / 1_000_000


class KernelEventClassifier:
    """Group and classify one boot's records into kernel events.

    ``clock_offset_ns`` turns ``ts_usec`` into wall time like forwarder.encoding.reference does;
    ``clock`` (monotonic seconds) only stamps when reports last grew, for
    :meth:`flush_idle`.
    """

    def __init__(
        self,
        *,
        host: str,
        boot_id: str,
        clock_offset_ns: int,
        disabled_classes: Iterable[str] = (),
        rules: Iterable[UserRule] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._boot_id = boot_id
        self._clock_offset_ns = clock_offset_ns
        self._disabled = frozenset(disabled_classes)
        self._rules = tuple(rules)
        self._clock = clock
        self._open: list[Report] = []
        # Kern records since the open reports' idle_records were last brought up to date
        # (no report took them), and what the open reports let pass before that matters.
        self._pending_idle = 0
        self._bounds_stale = False
        self._idle_budget = MAX_IDLE_RECORDS
        self._quiet_deadline_usec = 0
        self._heads: tuple[str, ...] | None = None
        self._raw_heads: tuple[bytes, ...] | None = None
        self._previous_text = ""
        self._last_seq = 0
        self.ambiguous_fragments = 0

    @property
    def open_reports(self) -> int:
        """How many reports are being gathered."""
        return len(self._open)

    def feed(self, record: Record) -> list[KernelEvent]:
        """Classify one record; the events it closed (usually none)."""
        events: list[KernelEvent] = []
        self._last_seq = record.seq
        if self._rules:
            events.extend(self._apply_rules(record))
        if record.facility_code != 0:
            if self._open:
                events.extend(self.advance(record.seq, record.ts_usec))
            return events
        text = record.message
        if not (self._open and self._offer(record, text, events)):
            report = detect(record, text)
            if report is not None and report.class_name not in self._disabled:
                self._start(report, record, events)
        self._previous_text = text
        return events

    def pass_over(self, raw: bytes, seq: int, ts_usec: int) -> bool:
        """Count the kern record ``raw`` without parsing it, if no open report could take it.

        For a record that opens nothing (``might_open`` says so) while reports are open:
        True means feeding it would only have counted it as an idle record of each, which
        is done; False means it must be fed. ``raw`` must be a record ``parse_record`` takes.
        """
        if self._bounds_stale:
            self._compute_bounds()
        heads = self._raw_heads
        if (
            heads is None
            or not self._open
            or self._pending_idle >= self._idle_budget
            or ts_usec > self._quiet_deadline_usec
            # A head is printable ASCII without a backslash: never escaped in the raw text.
            or raw.startswith(heads, raw.find(b";") + 1)
        ):
            return False
        self._pending_idle += 1
        self._last_seq = seq
        return True

    def quiet_deadline_usec(self) -> int:
        """The ``ts_usec`` past which the first open report's quiet window has ended."""
        if self._bounds_stale:
            self._compute_bounds()
        return self._quiet_deadline_usec

    def advance(self, seq: int, ts_usec: int) -> list[KernelEvent]:
        """Close the reports whose quiet window (2 s of ``ts_usec``) a later record ended.

        Time moves on with records that are not classified too: a report that waits for
        optional trailing lines (an OOM report after its Killed line) must close while only
        user-space records arrive, which keep a live device from ever going idle. A caller
        that feeds only kern records calls this with the newest record it skipped.
        """
        self._last_seq = max(self._last_seq, seq)
        events: list[KernelEvent] = []
        for report in list(self._open):
            if ts_usec - report.last_ts_usec > report.quiet_usec:
                self._close(report, seq, events)
        return events

    def flush(self) -> list[KernelEvent]:
        """Close every open report (end of input, shutdown)."""
        events: list[KernelEvent] = []
        for report in list(self._open):
            self._close(report, self._last_seq, events)
        return events

    def flush_idle(self, now: float) -> list[KernelEvent]:
        """Close reports that got no member for 2 s of wall time (``now``: monotonic s)."""
        events: list[KernelEvent] = []
        for report in list(self._open):
            if now - report.last_wall_s >= IDLE_FLUSH_S:
                self._close(report, self._last_seq, events)
        return events

    def _offer(self, record: Record, text: str, events: list[KernelEvent]) -> bool:
        """Close what is over, offer ``record`` to the open reports: whether one took it.

        :class:`ReferenceClassifier` is the obvious form. Here a record no open report can
        take (their :attr:`~Report.head`) is offered to none, and the open reports' idle
        counts are brought up to date only when a report takes a record or may close.
        """
        if self._bounds_stale:
            self._compute_bounds()
        if self._pending_idle >= self._idle_budget or record.ts_usec > self._quiet_deadline_usec:
            self._catch_up()
            for report in list(self._open):
                if (
                    record.ts_usec - report.last_ts_usec > report.quiet_usec
                    or report.idle_records >= MAX_IDLE_RECORDS
                ):
                    self._close(report, record.seq, events)
        heads = self._heads
        member = None
        if (heads is None or text.startswith(heads)) and not self._ambiguous_fragment(record, text):
            member = self._offer_in_turn(record, text, events)
        if member is None:
            self._pending_idle += 1
            return False
        idle = self._pending_idle + 1
        for report in self._open:
            if report is not member:
                report.idle_records += idle
        self._pending_idle = 0
        self._bounds_stale = True
        return True

    def _catch_up(self) -> None:
        """Charge the records no report took to every open report's idle count."""
        if self._pending_idle:
            for report in self._open:
                report.idle_records += self._pending_idle
            self._pending_idle = 0
            self._bounds_stale = True

    def _compute_bounds(self) -> None:
        """What the open reports let pass before one may close, and the heads they take."""
        self._bounds_stale = False
        budget, deadline_usec = MAX_IDLE_RECORDS, None
        for report in self._open:
            budget = min(budget, MAX_IDLE_RECORDS - report.idle_records)
            ends_usec = report.last_ts_usec + report.quiet_usec
            if deadline_usec is None or ends_usec < deadline_usec:
                deadline_usec = ends_usec
        self._idle_budget, self._quiet_deadline_usec = budget, deadline_usec or 0
        heads = tuple(report.head for report in self._open if report.head is not None)
        self._heads = heads if len(heads) == len(self._open) else None
        self._raw_heads = None if self._heads is None else tuple(h.encode() for h in heads)

    def _offer_in_turn(self, record: Record, text: str, events: list[KernelEvent]) -> Report | None:
        for report in reversed(self._open):
            if not report.accepts_caller(record):
                continue
            verdict = report.offer(record, text, self._previous_text)
            if verdict is Verdict.CLOSE:
                self._close(report, record.seq, events)
            elif verdict is not Verdict.REJECT:
                report.add(record, self._clock())
                if verdict is Verdict.DONE:
                    self._close(report, record.seq, events)
                return report
        return None

    def _ambiguous_fragment(self, record: Record, text: str) -> bool:
        """A ``c`` fragment two reports could take, with no caller ids to tell: count it."""
        if "c" not in record.flags or record.caller:
            return False
        if sum(1 for report in self._open if report.wants_fragment(text)) < 2:
            return False
        self.ambiguous_fragments += 1
        return True

    def _start(self, report: Report, record: Record, events: list[KernelEvent]) -> None:
        if isinstance(report, SingleReport):
            # Done at its start, so never open, and no class of several records shares its
            # name: nothing to close first, nothing to absorb (ReferenceClassifier checks).
            report.finish()
            events.append(self._event(report, record.seq))
            return
        self._start_generic(report, record, events)

    def _start_generic(self, report: Report, record: Record, events: list[KernelEvent]) -> None:
        for old in list(self._open):
            if (
                old.class_name == report.class_name
                and old.key == report.key
                and old.accepts_caller(record)
            ):
                self._close(old, record.seq, events)
        if isinstance(report, OopsReport) and report.fields.get("cause") == "bug":
            self._absorb_cut_here(report, record)
        report.last_wall_s = self._clock()
        if report.done:
            self._close(report, record.seq, events)
        else:
            self._catch_up()  # the records before this one are not its idle records
            self._open.append(report)
            self._bounds_stale = True

    def _absorb_cut_here(self, oops: OopsReport, record: Record) -> None:
        """``cut here`` right before ``kernel BUG at`` belongs to the oops, not a warning."""
        for old in self._open:
            if isinstance(old, WarningReport) and old.only_cut_here and old.accepts_caller(record):
                self._open.remove(old)
                self._bounds_stale = True
                oops.absorb_cut_here(old)
                return

    def _close(self, report: Report, completed_by_seq: int, events: list[KernelEvent]) -> None:
        if report in self._open:
            self._open.remove(report)
            self._bounds_stale = True
        report.finish()
        events.append(self._event(report, completed_by_seq))

    def _event(self, report: Report, completed_by_seq: int) -> KernelEvent:
        return KernelEvent(
            class_name=report.class_name,
            host=self._host,
            boot_id=self._boot_id,
            member_seqs=tuple(report.member_seqs),
            complete=report.complete,
            timestamp_ns=self._clock_offset_ns + report.first_ts_usec * 1000,
            level_code=report.level_code,
            fields=report.fields,
            completed_by_seq=completed_by_seq,
        )

    def _apply_rules(self, record: Record) -> list[KernelEvent]:
        events: list[KernelEvent] = []
        for rule in self._rules:
            fields = rule.match(record)
            if fields is not None:
                events.append(
                    KernelEvent(
                        class_name=rule.class_name,
                        host=self._host,
                        boot_id=self._boot_id,
                        member_seqs=(record.seq,),
                        complete=True,
                        timestamp_ns=self._clock_offset_ns + record.ts_usec * 1000,
                        level_code=record.level_code,
                        fields=fields,
                        completed_by_seq=record.seq,
                    )
                )
        return events


class ReferenceClassifier(KernelEventClassifier):
    """The slow, obvious grouping (for tests): every open report is offered every record."""

    def _start(self, report: Report, record: Record, events: list[KernelEvent]) -> None:
        self._start_generic(report, record, events)

    def _offer(self, record: Record, text: str, events: list[KernelEvent]) -> bool:
        for report in list(self._open):
            if (
                record.ts_usec - report.last_ts_usec > report.quiet_usec
                or report.idle_records >= MAX_IDLE_RECORDS
            ):
                self._close(report, record.seq, events)
        member = None
        if not self._ambiguous_fragment(record, text):
            member = self._offer_in_turn(record, text, events)
        for report in self._open:
            if report is not member:
                report.idle_records += 1
        return member is not None
