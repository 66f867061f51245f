"""An open report: the members gathered so far and the state of its class's grammar.

Every class is a :class:`Report` subclass. The classifier offers each new kern record to
the open reports; ``offer`` answers with a :class:`Verdict` and, when the record joins,
has already taken its fields. Boundaries follow from record content and ``ts_usec`` only
(SPEC.md section 1.3), so a dump replay and a live run group the same way.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from forwarder.kernel_events.values import Fields
from forwarder.source.parser import Record

QUIET_USEC = 2_000_000
MAX_IDLE_RECORDS = 200


class Verdict(enum.Enum):
    """What an open report says about one offered record."""

    REJECT = "reject"  # not a member; the report stays open
    JOIN = "join"  # a member; the report stays open
    DONE = "done"  # a member, and the report's end marker: it closes now
    CLOSE = "close"  # not a member, and the report is over: it closes before the record


class Report:
    """One report of one class being gathered.

    ``started`` says the class's start record was seen (a report opened from a mid-report
    anchor has it False); ``end_met`` says the class's end condition was; the event is
    ``complete`` when both hold. ``key`` separates reports of the same class that may be
    open together (a device, a port); a new start of the same class and key closes the
    old report.
    """

    class_name: ClassVar[str] = ""
    quiet_usec: ClassVar[int] = QUIET_USEC
    # Every record this report can take starts so (None: any record may join). Offered a
    # record that does not, ``offer`` says REJECT and ``wants_fragment`` False, and the
    # report never reads ``previous_text``: the classifier need not offer it at all.
    head: str | None = None

    def __init__(
        self,
        record: Record,
        fields: Fields,
        *,
        started: bool = True,
        end_met: bool = True,
        key: str | None = None,
        done: bool = False,
    ) -> None:
        self.fields = fields
        self.member_seqs = [record.seq]
        self.first_ts_usec = record.ts_usec
        self.last_ts_usec = record.ts_usec
        self.level_code = record.level_code
        self.callers: set[str] = {record.caller} if record.caller else set()
        self.started = started
        self.end_met = end_met
        self.key = key
        self.done = done
        self.last_text = record.message
        self.idle_records = 0
        self.last_wall_s = 0.0

    @property
    def complete(self) -> bool:
        """Start record and end condition both seen."""
        return self.started and self.end_met

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Judge one later kern record (``previous_text``: the kern record before it)."""
        del record, text, previous_text
        return Verdict.REJECT

    def wants_fragment(self, text: str) -> bool:
        """Whether this report expects the KERN_CONT fragment ``text`` (flag ``c``)."""
        del text
        return False

    def add(self, record: Record, wall_s: float) -> None:
        """Record ``record`` as a member (its fields were taken by ``offer``)."""
        self.member_seqs.append(record.seq)
        self.last_ts_usec = record.ts_usec
        self.level_code = min(self.level_code, record.level_code)
        if record.caller:
            self.callers.add(record.caller)
        self.last_text = record.message
        self.idle_records = 0
        self.last_wall_s = wall_s

    def finish(self) -> None:
        """Last chance to derive fields from everything gathered (called once at close)."""

    def accepts_caller(self, record: Record) -> bool:
        """Caller ids are authoritative: another caller's records never join."""
        return not (record.caller and self.callers and record.caller not in self.callers)


class SingleReport(Report):
    """A class whose report is its one start record."""

    def __init__(self, record: Record, fields: Fields) -> None:
        super().__init__(record, fields, done=True)
