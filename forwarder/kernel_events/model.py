"""The kernel event value: one classified report, and its JSON object.

Envelope (SPEC.md section 1.1, vectors.json ``judging``)::

    {"event": "kernel_event", "class", "id": "<boot_id>-<first_seq>-<class>", "host",
     "boot_id", "first_seq", "last_seq", "record_count", "member_seqs" (only when the
     members are not contiguous), "complete", "@timestamp" (first member), "level" (most
     severe member), "fields": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forwarder.encoding.reference import format_timestamp
from forwarder.kernel_events.values import Fields
from forwarder.source.parser import level_name


@dataclass(slots=True)  # not frozen: frozen __init__ is 5x slower, one per event
class KernelEvent:
    """One report of one class, closed and ready to ship (treat as immutable).

    ``completed_by_seq`` is the seq of the record whose arrival closed the report (the
    position a sink's checkpoint may move to once the event is delivered).
    """

    class_name: str
    host: str
    boot_id: str
    member_seqs: tuple[int, ...]
    complete: bool
    timestamp_ns: int
    level_code: int
    fields: Fields
    completed_by_seq: int

    @property
    def id(self) -> str:
        """``<boot_id>-<first_seq>-<class>``: the same report always gets the same id."""
        return f"{self.boot_id}-{self.first_seq}-{self.class_name}"

    @property
    def first_seq(self) -> int:
        """Seq of the first member record."""
        return self.member_seqs[0]

    @property
    def last_seq(self) -> int:
        """Seq of the last member record."""
        return self.member_seqs[-1]

    @property
    def contiguous(self) -> bool:
        """Whether the members are every record from first_seq to last_seq."""
        return self.last_seq - self.first_seq + 1 == len(self.member_seqs)

    def to_dict(self) -> dict[str, Any]:
        """The event's JSON object."""
        seqs = self.member_seqs
        first_seq, last_seq, count = seqs[0], seqs[-1], len(seqs)
        document: dict[str, Any] = {
            "event": "kernel_event",
            "class": self.class_name,
            "id": f"{self.boot_id}-{first_seq}-{self.class_name}",
            "host": self.host,
            "boot_id": self.boot_id,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "record_count": count,
        }
        if last_seq - first_seq + 1 != count:
            document["member_seqs"] = list(seqs)
        document["complete"] = self.complete
        document["@timestamp"] = format_timestamp(self.timestamp_ns)
        document["level"] = level_name(self.level_code)
        document["fields"] = self.fields
        return document
