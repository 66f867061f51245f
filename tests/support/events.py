"""Build realistic encoded Events for sink tests, without a kernel."""

from __future__ import annotations

import time
import uuid

from forwarder.encoding.chunk import Chunk, ChunkEncoder, Slice
from forwarder.encoding.reference import Event, Identity, encode_gap, encode_record
from forwarder.kernel_events.envelope import encode_kernel_event
from forwarder.kernel_events.model import KernelEvent
from forwarder.sinks.base import Batch
from forwarder.source.parser import Record, render_record


def identity(host: str = "node-1") -> Identity:
    """A fresh boot whose records are timestamped around now."""
    now_ns = time.time_ns()
    return Identity(host=host, boot_id=str(uuid.uuid4()), clock_offset_ns=now_ns - 60 * 10**9)


def make_records(
    messages: list[str],
    *,
    first_seq: int = 100,
    level_code: int = 6,
    subsystem: str | None = None,
) -> list[Record]:
    """One kernel record per message, consecutive seqs, 1 ms apart."""
    return [
        Record(
            facility_code=1,
            level_code=level_code,
            seq=first_seq + index,
            ts_usec=59_000_000 + index * 1000,
            flags="-",
            message=message,
            subsystem=subsystem,
            device="n2" if subsystem else None,
        )
        for index, message in enumerate(messages)
    ]


def make_events(
    messages: list[str],
    *,
    who: Identity | None = None,
    first_seq: int = 100,
    level_code: int = 6,
    subsystem: str | None = None,
) -> list[Event]:
    """One kmsg Event per message, consecutive seqs, 1 ms apart."""
    who = who or identity()
    records = make_records(
        messages, first_seq=first_seq, level_code=level_code, subsystem=subsystem
    )
    return [encode_record(record, who) for record in records]


def make_chunk(records: list[Record], who: Identity) -> Chunk:
    """The chunk the reader would encode from these records (what the fast path carries)."""

    def refuse(raw: bytes, error: Exception, *_: object) -> None:
        raise AssertionError(f"{raw!r}: {error!r}")

    return ChunkEncoder(who).encode([render_record(r) for r in records], refuse, refuse)


def make_slice(
    messages: list[str],
    *,
    who: Identity,
    first_seq: int = 100,
    subsystem: str | None = None,
) -> Slice:
    """The records of make_events(...) as one slice of a chunk (same JSON, same ids)."""
    chunk = make_chunk(make_records(messages, first_seq=first_seq, subsystem=subsystem), who)
    return Slice(chunk, 0, len(chunk))


def gap_event(who: Identity, first_seq: int, last_seq: int) -> Event:
    """A gap event of ``who``'s boot."""
    return encode_gap(
        host=who.host,
        boot_id=who.boot_id,
        first_seq=first_seq,
        last_seq=last_seq,
        reason="overwritten",
        timestamp_ns=who.clock_offset_ns + 59_000_000_000,
        checkpoint_boot_id=who.boot_id,
        checkpoint_seq=last_seq,
    )


def batch(events: list[Event]) -> Batch:
    """A Batch of these events."""
    return Batch(events)


def make_kernel_event(
    class_name: str,
    first_seq: int,
    *,
    who: Identity | None = None,
    record_count: int = 3,
    fields: dict[str, object] | None = None,
) -> Event:
    """A kernel_event Event of ``class_name`` over ``record_count`` consecutive records."""
    who = who or identity()
    seqs = tuple(range(first_seq, first_seq + record_count))
    report = KernelEvent(
        class_name=class_name,
        host=who.host,
        boot_id=who.boot_id,
        member_seqs=seqs,
        complete=True,
        timestamp_ns=who.clock_offset_ns + 59_000_000_000,
        level_code=1,
        fields=dict(fields or {"cpu": 0}),
        completed_by_seq=seqs[-1],
    )
    return encode_kernel_event(report, seqs[-1])


def as_slice(events: list[Event], who: Identity) -> Slice:
    """The same kmsg events (consecutive seqs) as one slice of the chunk the reader would build."""
    records = []
    for event in events:
        fields = event.fields
        records.append(
            Record(
                facility_code=fields["facility_code"],
                level_code=fields["level_code"],
                seq=fields["seq"],
                ts_usec=fields["monotonic_us"],
                flags=fields["flags"],
                message=fields["message"],
                subsystem=fields.get("subsystem"),
                device=fields.get("device"),
            )
        )
    chunk = make_chunk(records, who)
    assert chunk.lines == [event.json for event in events]
    return Slice(chunk, 0, len(chunk))
