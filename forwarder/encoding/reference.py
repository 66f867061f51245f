"""Turn Records and gaps into output Events: the JSON objects of DESIGN.md section 3.

Every event is encoded once (orjson) and shared by all sinks. Identity and time are
deterministic: ``id = "<boot_id>-<seq>"`` and ``@timestamp = clock_offset_ns + ts_usec``,
so a record sent twice is byte-identical (Loki dedup, Elasticsearch ``create``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from forwarder.source.parser import Record

EventKind = Literal["kmsg", "gap", "kernel_event"]
GapReason = Literal["overwritten", "missed_while_down", "reboot", "spool_full", "spool_corrupt"]


@dataclass(slots=True)  # not frozen: built once per record on the hot path
class Event:
    """One output event, ready for any sink.

    ``checkpoint_seq`` is the kernel seq a sink's checkpoint may move to once this event
    (and everything before it) is delivered; ``json`` is the event's JSON object, encoded.
    """

    kind: EventKind
    id: str
    boot_id: str
    checkpoint_seq: int
    timestamp_ns: int
    json: bytes

    @property
    def fields(self) -> dict[str, Any]:
        """The JSON object, decoded (a new dict on every call: read it once)."""
        fields: dict[str, Any] = orjson.loads(self.json)
        return fields


@dataclass(frozen=True, slots=True)
class Identity:
    """What stamps every event: the host name, the boot and that boot's clock offset."""

    host: str
    boot_id: str
    clock_offset_ns: int


def encode_record(record: Record, identity: Identity) -> Event:
    """Build the Event of one kernel record."""
    timestamp_ns = identity.clock_offset_ns + record.ts_usec * 1000
    record_id = f"{identity.boot_id}-{record.seq}"
    fields: dict[str, Any] = {
        "event": "kmsg",
        "id": record_id,
        "@timestamp": format_timestamp(timestamp_ns),
        "host": identity.host,
        "boot_id": identity.boot_id,
        "seq": record.seq,
        "monotonic_us": record.ts_usec,
        "facility": record.facility,
        "facility_code": record.facility_code,
        "level": record.level,
        "level_code": record.level_code,
        "flags": record.flags,
        "message": record.message,
    }
    if record.subsystem is not None:
        fields["subsystem"] = record.subsystem
    if record.device is not None:
        fields["device"] = record.device
    if record.caller is not None:
        fields["caller"] = record.caller
    if record.fields:
        fields["fields"] = dict(record.fields)
    return Event("kmsg", record_id, identity.boot_id, record.seq, timestamp_ns, _dumps(fields))


def encode_gap(
    *,
    host: str,
    boot_id: str,
    first_seq: int,
    last_seq: int | None,
    reason: GapReason,
    timestamp_ns: int,
    checkpoint_boot_id: str,
    checkpoint_seq: int,
) -> Event:
    """Build a gap event: records ``first_seq..last_seq`` of ``boot_id`` were lost.

    ``last_seq`` and the count are None when unknowable (a reboot). The event's
    checkpoint position (``checkpoint_boot_id``, ``checkpoint_seq``) is where a sink
    stands once the gap is reported.
    """
    lost = None if last_seq is None else last_seq - first_seq + 1
    fields: dict[str, Any] = {
        "event": "gap",
        "id": f"{boot_id}-gap-{first_seq}",
        "host": host,
        "boot_id": boot_id,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "lost": lost,
        "reason": reason,
        "@timestamp": format_timestamp(timestamp_ns),
    }
    return Event(
        "gap",
        fields["id"],
        checkpoint_boot_id,
        checkpoint_seq,
        timestamp_ns,
        _dumps(fields),
    )


def _dumps(fields: dict[str, Any]) -> bytes:
    """The orjson encoding, copied to its exact size.

    orjson hands back its whole ~4 KiB output buffer; the thousands of events that wait for a
    slow sink would hold 10x their size (replaying 200k records: peak RSS 297 -> 128 MiB).
    """
    return memoryview(orjson.dumps(fields)).tobytes()


def format_timestamp(timestamp_ns: int) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-26T19:42:10.123456Z``."""
    seconds, nanos = divmod(timestamp_ns, 1_000_000_000)
    return f"{_format_seconds(seconds)}.{nanos // 1000:06d}Z"


@functools.lru_cache(maxsize=64)
def _format_seconds(seconds: int) -> str:
    # Records come in bursts within the same second: formatting the date once pays.
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%S}"
