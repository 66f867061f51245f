"""The Loki push protocol: request bodies in, per-entry verdicts out.

Bodies follow https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs:
JSON ``{"streams":[{"stream":{labels},"values":[["<ns>","line",{metadata}]]}]}`` or a
snappy-compressed (raw block) protobuf ``logproto.PushRequest``::

    PushRequest   { repeated StreamAdapter streams = 1; }
    StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2; }
    EntryAdapter  { Timestamp timestamp = 1; string line = 2;
                    repeated LabelPairAdapter structuredMetadata = 3; }
    LabelPairAdapter { string name = 1; string value = 2; }
    Timestamp     { int64 seconds = 1; int32 nanos = 2; }

The encoder is written by hand: five tiny messages of strings and varints do not
justify the ``protobuf`` runtime and generated code as a dependency, and a direct
encoder is faster than building message objects.

A 400 from Loki is a partial success: valid entries were stored and the body lists the
ignored ones. :func:`rejected_entries` maps that text back onto the entries sent.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import orjson

from forwarder.sinks.protobuf_wire import ONE_BYTE as _ONE_BYTE
from forwarder.sinks.protobuf_wire import varint as _varint

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from forwarder.encoding.reference import Event

LabelSet = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Entry:
    """One log line of a stream, with the event it came from."""

    timestamp_ns: int
    line: str
    metadata: tuple[tuple[str, str], ...]
    event: Event | None = None  # None for a record sent from a chunk's columns


@dataclass(frozen=True, slots=True)
class Stream:
    """Entries sharing one label set, in timestamp order."""

    labels: LabelSet
    entries: Sequence[Entry]


def group_streams(entries: Iterable[tuple[LabelSet, Entry]]) -> list[Stream]:
    """Group entries by label set; each stream's entries sorted by timestamp (stable)."""
    grouped: dict[LabelSet, list[Entry]] = {}
    for labels, entry in entries:
        grouped.setdefault(labels, []).append(entry)
    return [
        Stream(labels, sorted(items, key=lambda entry: entry.timestamp_ns))
        for labels, items in grouped.items()
    ]


def json_body(streams: Sequence[Stream]) -> bytes:
    """The JSON push body; timestamps are strings of nanoseconds, as Loki requires."""
    return orjson.dumps(
        {
            "streams": [
                {
                    "stream": dict(stream.labels),
                    "values": [
                        [str(entry.timestamp_ns), entry.line, dict(entry.metadata)]
                        if entry.metadata
                        else [str(entry.timestamp_ns), entry.line]
                        for entry in stream.entries
                    ],
                }
                for stream in stream_list(streams)
            ]
        }
    )


def stream_list(streams: Sequence[Stream]) -> Sequence[Stream]:
    """The streams in a stable order (by labels), so equal batches give equal bodies."""
    return sorted(streams, key=lambda stream: stream.labels)


def protobuf_body(streams: Sequence[Stream]) -> bytes:
    """The uncompressed protobuf ``PushRequest``."""
    out = bytearray()
    for stream in stream_list(streams):
        message = bytearray(_field(0x0A, format_labels(stream.labels).encode()))
        for entry in stream.entries:
            message += _field(0x12, _entry(entry))
        out += _field(0x0A, bytes(message))
    return bytes(out)


def format_labels(labels: LabelSet) -> str:
    """Prometheus label syntax, ``{a="b", c="d"}``, as the protobuf ``labels`` field wants."""
    pairs = ", ".join(f"{name}={orjson.dumps(value).decode()}" for name, value in labels)
    return "{" + pairs + "}"


def _entry(entry: Entry) -> bytes:
    seconds, nanos = divmod(entry.timestamp_ns, 1_000_000_000)
    timestamp = (b"\x08" + _varint(seconds & _U64) if seconds else b"") + (
        b"\x10" + _varint(nanos) if nanos else b""
    )
    line = entry.line.encode()
    size = len(line)
    # proto3 leaves out empty strings; the timestamp message is always there.
    parts = [b"\x0a", _ONE_BYTE[len(timestamp)], timestamp]  # at most 17 bytes
    if size:
        parts += (b"\x12", _ONE_BYTE[size] if size < 0x80 else _varint(size), line)
    for name, value in entry.metadata:
        encoded = value.encode()
        size = len(encoded)
        pair = _name_field(name)
        if size:
            pair += b"\x12" + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + encoded
        size = len(pair)
        parts += (b"\x1a", _ONE_BYTE[size] if size < 0x80 else _varint(size), pair)
    return b"".join(parts)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


@functools.cache
def _name_field(name: str) -> bytes:
    """Field 1 (``name``) of a LabelPairAdapter; the few names repeat on every entry."""
    return _field(0x0A, name.encode())


def length_prefixed(tag: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: ``tag``, the payload's length, the payload."""
    return _field(tag, payload)


def name_field(name: str) -> bytes:
    """Field 1 (``name``) of a LabelPairAdapter, encoded."""
    return _name_field(name)


def varint(value: int) -> bytes:
    """A protobuf varint (unsigned)."""
    return _varint(value)


def protobuf_streams(streams: dict[LabelSet, list[tuple[int, bytes]]]) -> bytes:
    """A PushRequest of already encoded entries (``(timestamp_ns, EntryAdapter)``) per label set.

    Streams in label order and entries by timestamp (stable), as :func:`protobuf_body` has them.
    """
    out = bytearray()
    for labels in sorted(streams):
        entries = streams[labels]
        entries.sort(key=_timestamp)
        message = bytearray(_field(0x0A, format_labels(labels).encode()))
        for _, entry in entries:
            size = len(entry)
            if size < 0x4000:  # an entry's length in one or two bytes: the usual
                message += (
                    b"\x12%c" % size
                    if size < 0x80
                    else b"\x12%c%c" % (size & 0x7F | 0x80, size >> 7)
                )
            else:
                message += b"\x12" + _varint(size)
            message += entry
        out += _field(0x0A, bytes(message))
    return bytes(out)


def _timestamp(entry: tuple[int, bytes]) -> int:
    return entry[0]


_U64 = 0xFFFF_FFFF_FFFF_FFFF


# --- the 400 answer ------------------------------------------------------------------
# Shapes (Loki's ingester and distributor; several errors are joined with "; ", an
# ingester stream error lists at most max_returned_errors entries, 10 by default):
#   entry with timestamp <go time> ignored, reason: '<why>',\n ... \n
#       user '<tenant>', total ignored: N out of M for stream: {a="b"}
#   entry with timestamp <go time> ignored, reason: '<why>' for stream: {a="b"},\n
#       total ignored: N out of M                                        (older Lokis)
#   entry for stream '{a="b"}' has timestamp too old: <go time>, oldest acceptable ...
#   Max entry size 'N' bytes exceeded for stream '{a="b"}' while adding an entry with
#       length 'L' bytes

_GO_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})? [+-]\d{4})(?: [A-Za-z0-9+-]+)?"
_SEGMENT_SPLIT = re.compile(
    r"\n|;\s+(?=\d+ errors like: |entry |user '|total ignored|stream '|Max entry)"
)
_GROUPED = re.compile(r"^\d+ errors like: ")
_IGNORED = re.compile(
    rf"^entry with timestamp {_GO_TIME} ignored, reason: '(.*)'(?: for stream: (\{{.*\}}))?,?$"
)
_SUMMARY = re.compile(r"total ignored: (\d+) out of \d+(?: for stream: (\{.*\}))?")
_STREAM = re.compile(r"stream(?::| ') ?(\{.*?\})'?(?: |,|$)")
_TOO_OLD_OR_NEW = re.compile(rf"has timestamp too (?:old|new): {_GO_TIME}")
_LENGTH = re.compile(r"an entry with length '(\d+)' bytes")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(slots=True)
class _Finding:
    """What one error line says was ignored; None fields match anything."""

    detail: str
    labels: dict[str, str] | None = None
    timestamp_ns: int | None = None
    line_bytes: int | None = None

    def matches(self, labels: LabelSet, entry: Entry) -> bool:
        if self.labels is not None and any(self.labels.get(k) != v for k, v in labels):
            return False
        if self.timestamp_ns is not None and self.timestamp_ns != entry.timestamp_ns:
            return False
        return self.line_bytes is None or self.line_bytes == len(entry.line.encode())


def rejected_entries(body: str, streams: Sequence[Stream]) -> dict[int, tuple[Entry, str]]:
    """Map a 400 body to the entries Loki ignored: ``{id(entry): (entry, reason)}``.

    Entries named by timestamp (and stream), by stream and line length, or whole
    streams (stream-level errors, or a list Loki cut short) are ignored; everything
    else was stored. If nothing in the body names an entry we sent, every entry is
    taken as ignored: it is safer to dead-letter a stored entry than to lose one.
    """
    findings = _findings(body)
    rejected: dict[int, tuple[Entry, str]] = {}
    for stream in streams:
        for entry in stream.entries:
            for finding in findings:
                if finding.matches(stream.labels, entry):
                    rejected[id(entry)] = (entry, finding.detail)
                    break
    if not rejected:
        detail = body.strip()[:512] or "HTTP 400 without a body"
        for stream in streams:
            for entry in stream.entries:
                rejected[id(entry)] = (entry, detail)
    return rejected


def _findings(body: str) -> list[_Finding]:
    findings: list[_Finding] = []
    pending: list[_Finding] = []  # ingester entries whose stream the summary line names
    for raw in _SEGMENT_SPLIT.split(body):
        segment = _GROUPED.sub("", raw.strip())
        if not segment:
            continue
        if ignored := _IGNORED.match(segment):
            finding = _Finding(
                f"{ignored.group(2)} (timestamp {ignored.group(1)})",
                timestamp_ns=_parse_go_time(ignored.group(1)),
            )
            if ignored.group(3) is not None:
                finding.labels = _parse_labels(ignored.group(3))
            pending.append(finding)
        elif summary := _SUMMARY.search(segment):
            labels = _parse_labels(summary.group(2)) if summary.group(2) else None
            labels = labels or next((f.labels for f in pending if f.labels), None)
            for finding in pending:
                finding.labels = finding.labels or labels
            if int(summary.group(1)) > len(pending):
                # Loki listed only some ignored entries: which others it stored is unknown.
                detail = f"Loki did not list every ignored entry: {segment}"
                findings.append(_Finding(detail, labels=labels))
            findings.extend(pending)
            pending = []
        else:
            findings.append(_distributor_finding(segment))
    findings.extend(pending)
    # A whole-stream finding must not shadow the precise reasons of listed entries.
    return sorted(findings, key=lambda f: f.timestamp_ns is None and f.line_bytes is None)


def _distributor_finding(segment: str) -> _Finding:
    finding = _Finding(segment)  # naming no stream, it may concern any entry
    stream = _STREAM.search(segment)
    if stream is None:
        return finding
    finding.labels = _parse_labels(stream.group(1))
    if when := _TOO_OLD_OR_NEW.search(segment):
        finding.timestamp_ns = _parse_go_time(when.group(1))
    if length := _LENGTH.search(segment):
        finding.line_bytes = int(length.group(1))
    return finding


def _parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for name, quoted in _LABEL.findall(text):
        try:
            labels[name] = orjson.loads(f'"{quoted}"')
        except orjson.JSONDecodeError:
            labels[name] = quoted
    return labels


def _parse_go_time(text: str) -> int:
    """Go's ``time.Time.String()`` (``2024-05-01 10:00:00.5 +0000 UTC``) to Unix ns."""
    parts = text.split(" ")
    clock, _, fraction = parts[1].partition(".")
    offset = parts[2]
    sign = -1 if offset[0] == "-" else 1
    zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    moment = datetime.fromisoformat(f"{parts[0]}T{clock}").replace(tzinfo=zone)
    return int(moment.timestamp()) * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)
