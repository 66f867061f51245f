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

from collections.abc import Iterator, Sequence
from typing import Any, Final

import orjson

from forwarder.encoding.chunk import Slice
from forwarder.sinks.loki.push import Entry
from forwarder.source.parser import LEVEL_NAMES, facility_name

_MESSAGE_KEY: Final = b',"message":'
_MEMBER: Final = b',"'
_MAX_CACHED_TAILS: Final = 1024
# Fields a record's columns (and its tail) hold; others need the decoded JSON.
COLUMN_FIELDS: Final = frozenset(
    {"host", "boot_id", "seq", "id", "event", "facility", "facility_code", "level",
     "level_code", "monotonic_us", "subsystem", "device"}
)  # fmt: skip


class ColumnEntries:
    """Builds (label values, Entry) per record of a slice for the configured fields."""

    def __init__(self, label_fields: Sequence[str], metadata_fields: Sequence[str]) -> None:
        self._labels = tuple(label_fields)
        self._metadata = tuple(metadata_fields)
        self.usable = COLUMN_FIELDS.issuperset(self._labels + self._metadata)
        self._tails: dict[bytes, dict[str, Any]] = {}

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

    def _tail(self, key: bytes) -> dict[str, Any]:
        """The members after the message (subsystem, device...), decoded once per tail."""
        decoded: dict[str, Any] = orjson.loads(b"{" + key[1:] + b"}")
        if len(self._tails) >= _MAX_CACHED_TAILS:
            self._tails.clear()
        self._tails[key] = decoded
        return decoded
