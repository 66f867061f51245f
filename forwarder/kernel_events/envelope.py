"""Turn a :class:`KernelEvent` into the :class:`Event` every sink takes.

The JSON object is :meth:`KernelEvent.to_dict` (the vectors' judging block); the Event's
checkpoint position is the seq of the record that completed the report (or, for a report
flushed at the end of a dump or after 2 s of quiet, the newest record read), so a sink
whose checkpoint already stands there got the event before a restart.

The bytes are written from a template per class, host and boot (their JSON computed once):
only the fields go through orjson. :func:`encode_kernel_event_reference` is the obvious
``orjson.dumps(to_dict())``; a property test pins the two together.
"""

from __future__ import annotations

import functools

import orjson

from forwarder.encoding.reference import Event, format_timestamp
from forwarder.kernel_events.model import KernelEvent
from forwarder.source.parser import LEVEL_NAMES

_LEVELS = tuple(name.encode() for name in LEVEL_NAMES)
_COMPLETE = (b"false", b"true")


def encode_kernel_event(event: KernelEvent, position: int) -> Event:
    """The shippable event of ``event``, moving a sink's checkpoint to ``position``."""
    seqs = event.member_seqs
    first_seq, last_seq, count = seqs[0], seqs[-1], len(seqs)
    members = b"" if last_seq - first_seq + 1 == count else b',"member_seqs":' + _dumps(list(seqs))
    class_name, boot_id = event.class_name, event.boot_id
    encoded = _template(class_name, event.host, boot_id) % (
        first_seq,
        first_seq,
        last_seq,
        count,
        members,
        _COMPLETE[event.complete],
        format_timestamp(event.timestamp_ns).encode(),
        _LEVELS[event.level_code],
        _dumps(event.fields),
    )
    event_id = f"{boot_id}-{first_seq}-{class_name}"
    return Event("kernel_event", event_id, boot_id, position, event.timestamp_ns, encoded)


def encode_kernel_event_reference(event: KernelEvent, position: int) -> Event:
    """:func:`encode_kernel_event` the obvious way (for tests): orjson over ``to_dict``."""
    encoded = memoryview(orjson.dumps(event.to_dict())).tobytes()
    return Event("kernel_event", event.id, event.boot_id, position, event.timestamp_ns, encoded)


def class_of(event: Event) -> str:
    """The class of a kernel_event Event, read from its id (``<boot_id>-<first_seq>-<class>``)."""
    return event.id.rpartition("-")[2]


@functools.lru_cache(maxsize=64)
def _template(class_name: str, host: str, boot_id: str) -> bytes:
    """The event's JSON with ``%`` holes for what varies (JSON escapes each character alone).

    The holes: first seq (for the id), first and last seq, record count, the member seqs
    member (or nothing), complete, timestamp, level, fields.
    """
    name, boot = _dumps(class_name), _dumps(boot_id)
    parts = (
        b'{"event":"kernel_event","class":' + name + b',"id":' + boot[:-1],
        b"-" + b"\0" + b"-" + name[1:] + b',"host":' + _dumps(host) + b',"boot_id":' + boot,
        b',"first_seq":\0,"last_seq":\0,"record_count":\0\0,"complete":\0',
        b',"@timestamp":"\0","level":"\0","fields":\0}',
    )
    holes = iter((b"%d", b"%d", b"%d", b"%d", b"%b", b"%b", b"%b", b"%b", b"%b"))
    # JSON text never holds a raw NUL (orjson writes \u0000): the NULs above are the holes.
    escaped = b"".join(parts).replace(b"%", b"%%")
    return b"".join(piece + next(holes, b"") for piece in escaped.split(b"\0"))


def _dumps(value: object) -> bytes:
    return orjson.dumps(value)
