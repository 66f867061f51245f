"""Loki entries of a chunk slice, read from the chunk's columns instead of decoded JSON.

Labels and structured metadata of a kernel record are its host, boot, seq, facility and
level (the chunk's columns and identity) plus its subsystem and device; the line is its
message. Those two come out of the record's JSON bytes without decoding the whole
object: in JSON a ``,"`` never occurs inside a string (every quote in one is escaped),
so the message starts after the one ``,"message":`` key and ends where the next member
(subsystem, device, caller, fields) or the closing brace begins. The members after the
message repeat (a few devices log most records), so each distinct tail is decoded once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import orjson

from forwarder.encoding.chunk import Slice
from forwarder.encoding.reference import Identity
from forwarder.sinks.loki.push import Entry, LabelSet, length_prefixed, name_field, varint
from forwarder.source.parser import LEVEL_NAMES, facility_name

_MESSAGE_KEY: Final = b',"message":'
_MEMBER: Final = b',"'
_MAX_CACHED_TAILS: Final = 1024
_PER_RECORD: Final = frozenset({"seq", "id", "monotonic_us"})  # metadata written per record
Problem = tuple[str, str] | None
LabelSetOf = Callable[[tuple[Any, ...]], tuple[LabelSet, Problem]]
# One record of a slice, pushed as protobuf: its index in the slice, labels, what Loki would
# refuse in it (None: nothing), its timestamp and its encoded EntryAdapter.
Encoded = tuple[int, LabelSet, Problem, int, bytes]
_Plan = tuple[LabelSet, Problem, list[Any], bytes | None, tuple[str, ...]]
# Bytes of a per-record pair before its value: name field, value tag, value length.
_HEADS: Final = {"seq": 7, "id": 6, "monotonic_us": 16}
# Fields a record's columns (and its tail) hold; others need the decoded JSON.
COLUMN_FIELDS: Final = frozenset(
    {"host", "boot_id", "seq", "id", "event", "facility", "facility_code", "level",
     "level_code", "monotonic_us", "subsystem", "device"}
)  # fmt: skip


# Some check failed: the sink words the exact problem from the entry (a rare path).
_REFUSED: Final = ("", "")


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field whose payload may be empty (proto3 leaves empty strings out)."""
    return length_prefixed(tag, payload) if payload else b""


class ColumnEntries:
    """Builds (label values, Entry) per record of a slice for the configured fields."""

    def __init__(self, label_fields: Sequence[str], metadata_fields: Sequence[str]) -> None:
        self._labels = tuple(label_fields)
        self._metadata = tuple(metadata_fields)
        self.usable = COLUMN_FIELDS.issuperset(self._labels + self._metadata)
        self._tails: dict[bytes, dict[str, Any]] = {}
        self._plans: dict[tuple[int, bytes], _Plan] = {}  # by prefix and tail
        self._identity: Identity | None = None
        self._seconds: dict[int, bytes] = {}

    def entries(self, part: Slice, message_line: bool) -> Iterator[tuple[tuple[Any, ...], Entry]]:
        """Label values (as the record's JSON has them) and the entry of every record."""
        chunk = part.chunk
        identity = chunk.identity
        seqs, prefixes, stamps = chunk.seqs, chunk.prefixes, chunk.ts_usec
        offset_ns = identity.clock_offset_ns
        fixed: dict[str, Any] = {"host": identity.host, "boot_id": identity.boot_id,
                                 "event": "kmsg"}  # fmt: skip
        boot_dash = identity.boot_id + "-"
        labels, metadata, tails = self._labels, self._metadata, self._tails
        for index, line in enumerate(part.lines(), part.start):
            start = line.find(_MESSAGE_KEY) + len(_MESSAGE_KEY)
            end = line.find(_MEMBER, start)
            if end < 0:
                end = len(line) - 1
                tail: dict[str, Any] = {}
            else:
                key = line[end:-1]
                tail = tails.get(key) or self._tail(key)
            seq, prefix = seqs[index], prefixes[index]
            fields = {**fixed, **tail}
            fields["seq"] = seq
            fields["id"] = boot_dash + str(seq)
            fields["facility"] = facility_name(prefix >> 3)
            fields["facility_code"] = prefix >> 3
            fields["level"] = LEVEL_NAMES[prefix & 7]
            fields["level_code"] = prefix & 7
            fields["monotonic_us"] = stamps[index]
            if message_line:
                message = line[start:end]
                text = message[1:-1].decode() if b"\\" not in message else orjson.loads(message)
            else:
                text = line.decode()
            timestamp_ns = offset_ns + stamps[index] * 1000
            yield (
                tuple(fields.get(name) for name in labels),
                Entry(
                    timestamp_ns - timestamp_ns % 1000,
                    text,
                    tuple((name, str(fields[name])) for name in metadata if name in fields),
                ),
            )

    def protobuf(  # noqa: C901, PLR0912, PLR0915 - the one inlined loop of the Loki hot path
        self,
        part: Slice,
        label_set: LabelSetOf,
        message_line: bool,
        max_line_bytes: int,
        oldest_ns: float,
        newest_ns: float,
    ) -> Iterator[Encoded]:
        """Every record of ``part`` as an encoded protobuf entry (the JSON path's bytes).

        What does not depend on the record itself (labels, their problem, the metadata but
        seq, id and monotonic_us) is worked out once per prefix and tail, then reused.
        """
        chunk = part.chunk
        identity = chunk.identity
        seqs, prefixes, stamps = chunk.seqs, chunk.prefixes, chunk.ts_usec
        offset_us = identity.clock_offset_ns // 1000  # entries keep whole microseconds
        id_head = identity.boot_id.encode() + b"-"
        if identity is not self._identity:  # plans hold the host and boot id
            self._identity = identity
            self._plans.clear()
        plans, seconds_cache = self._plans, self._seconds
        for index, line in enumerate(part.lines(), part.start):
            start = line.find(_MESSAGE_KEY) + len(_MESSAGE_KEY)
            end = line.find(_MEMBER, start)
            tail = b"" if end < 0 else line[end:-1]
            if end < 0:
                end = len(line) - 1
            prefix = prefixes[index]
            plan = plans.get((prefix, tail)) or self._plan(identity, prefix, tail, label_set)
            labels, problem, metadata, meta_format, kinds = plan
            if message_line:
                text = line[start:end]
                text = text[1:-1] if b"\\" not in text else orjson.loads(text).encode()
            else:
                text = line
            seconds, micros = divmod(offset_us + stamps[index], 1_000_000)
            timestamp_ns = (offset_us + stamps[index]) * 1000
            if problem is None and (
                len(text) > max_line_bytes or not oldest_ns <= timestamp_ns <= newest_ns
            ):
                problem = _REFUSED
            stamp = seconds_cache.get(seconds) or self._second(seconds)
            if micros:
                nanos = micros * 1000
                stamp += (
                    b"\x10%c%c%c%c%c" % (nanos & 0x7F | 0x80, nanos >> 7 & 0x7F | 0x80,
                                         nanos >> 14 & 0x7F | 0x80, nanos >> 21 & 0x7F | 0x80,
                                         nanos >> 28)
                    if nanos >= 0x1000_0000
                    else b"\x10" + varint(nanos)
                )  # fmt: skip
            seq_text = b"%d" % seqs[index]
            size = len(text)
            if 0 < size < 0x80:
                first = b"\x0a%c%b\x12%c%b" % (len(stamp), stamp, size, text)
            elif 0x80 <= size < 0x4000:
                first = b"\x0a%c%b\x12%c%c%b" % (
                    len(stamp),
                    stamp,
                    size & 0x7F | 0x80,
                    size >> 7,
                    text,
                )
            else:
                first = b"\x0a%c%b" % (len(stamp), stamp) + _field(0x12, text)
            if meta_format is not None:  # the usual: every value's length fits one byte
                values: list[Any] = []
                for kind in kinds:
                    value = _metadata_value(kind, seq_text, id_head, stamps[index])
                    values += (len(value) + _HEADS[kind], len(value), value)
                yield (
                    index - part.start,
                    labels,
                    problem,
                    timestamp_ns,
                    first + meta_format % tuple(values),
                )
                continue
            parts = [first]
            for item in metadata:
                if item.__class__ is bytes:
                    parts.append(item)
                    continue
                head, kind = item
                value = _metadata_value(kind, seq_text, id_head, stamps[index])
                parts.append(length_prefixed(0x1A, head + varint(len(value)) + value))
            yield index - part.start, labels, problem, timestamp_ns, b"".join(parts)

    def _plan(self, identity: Identity, prefix: int, tail: bytes, label_set: LabelSetOf) -> _Plan:
        """Labels, their problem and the metadata of one shape of record.

        The metadata is kept as encoded pairs and per-record names, and as one format (None
        when a per-record value could be too long for a one-byte length: a long boot id).
        """
        boot_id = identity.boot_id
        fields: dict[str, Any] = {"host": identity.host, "boot_id": boot_id, "event": "kmsg"}
        fields |= self._tails.get(tail) or self._tail(tail) if tail else {}
        fields["facility"] = facility_name(prefix >> 3)
        fields["facility_code"] = prefix >> 3
        fields["level"] = LEVEL_NAMES[prefix & 7]
        fields["level_code"] = prefix & 7
        labels, problem = label_set(tuple(fields.get(name) for name in self._labels))
        metadata: list[Any] = []
        for name in self._metadata:
            if name in _PER_RECORD:
                metadata.append((name_field(name) + b"\x12", name))
            elif name in fields:
                value = str(fields[name]).encode()
                pair = name_field(name) + (length_prefixed(0x12, value) if value else b"")
                metadata.append(length_prefixed(0x1A, pair))
        meta_format: bytes | None = b"".join(
            item.replace(b"%", b"%%") if isinstance(item, bytes)
            else b"\x1a%c" + item[0].replace(b"%", b"%%") + b"%c%b"
            for item in metadata
        )  # fmt: skip
        if len(boot_id) > 64:
            meta_format = None
        kinds = tuple(item[1] for item in metadata if not isinstance(item, bytes))
        if len(self._plans) >= _MAX_CACHED_TAILS:
            self._plans.clear()
        self._plans[prefix, tail] = plan = (labels, problem, metadata, meta_format, kinds)
        return plan

    def _second(self, seconds: int) -> bytes:
        """The seconds field of a Timestamp (the nanos follow per record)."""
        if len(self._seconds) >= 64:
            self._seconds.clear()
        self._seconds[seconds] = stamp = b"\x08" + varint(seconds) if seconds else b""
        return stamp

    def _tail(self, key: bytes) -> dict[str, Any]:
        """The members after the message (subsystem, device...), decoded once per tail."""
        decoded: dict[str, Any] = orjson.loads(b"{" + key[1:] + b"}")
        if len(self._tails) >= _MAX_CACHED_TAILS:
            self._tails.clear()
        self._tails[key] = decoded
        return decoded


def _metadata_value(kind: str, seq_text: bytes, id_head: bytes, ts_usec: int) -> bytes:
    """A structured-metadata value of one record: its ``seq``, its ``id`` or its monotonic time."""
    if kind == "seq":
        return seq_text
    if kind == "id":
        return id_head + seq_text
    return b"%d" % ts_usec
