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
from forwarder.kernel_events.report import MAX_IDLE_RECORDS, QUIET_USEC, Report, Verdict
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
            self._open.append(report)

    def _absorb_cut_here(self, oops: OopsReport, record: Record) -> None:
        """``cut here`` right before ``kernel BUG at`` belongs to the oops, not a warning."""
        for old in self._open:
            if isinstance(old, WarningReport) and old.only_cut_here and old.accepts_caller(record):
                self._open.remove(old)
                oops.absorb_cut_here(old)
                return

    def _close(self, report: Report, completed_by_seq: int, events: list[KernelEvent]) -> None:
        if report in self._open:
            self._open.remove(report)
        report.finish()
        events.append(
            KernelEvent(
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
