"""Encode a window of raw kmsg records into one :class:`Chunk`, in one tight loop.

The output of every record is byte-identical to ``encode_record(parse_record(raw)).json``
(the reference, pinned by a property test): the JSON is written from bytes templates, and
orjson only runs on the parts that need escaping (a message with a backslash escape, a
quote or a non-ASCII byte; a dictionary). A record the fast path cannot take (an unusual
prefix, a number beyond 64 bits, a malformed header) goes through the reference instead,
so it fails, or succeeds, exactly as the reference does.

A record whose handling raises anything else is set aside: it goes to the failure hook
(dead-lettered with its raw bytes) and stays in the chunk as an empty line, so every sink
moves past its seq without a gap and without sending it.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate, count
from operator import add
from typing import Any, Final

import orjson

from forwarder.encoding.reference import Event, Identity, encode_record, format_timestamp
from forwarder.errors import RecordParseError
from forwarder.source.parser import (
    LEVEL_NAMES,
    TS_USEC_MAX,
    U64_MAX,
    Record,
    facility_name,
    parse_dictionary,
    parse_record,
    unescape,
)

# Bytes that JSON-encode as themselves: printable ASCII but the quote and the backslash.
_SAFE: Final = bytes(byte for byte in range(0x20, 0x7F) if byte not in b'"\\')
_CACHED_TAILS: Final = 256
_ZERO_DIGIT: Final = ord("0")
_FAST_PREFIXES: Final = 24 * 8  # the named facilities; others take the reference path


@dataclass(frozen=True, slots=True)
class Chunk:
    """The encoded records of one read window: NDJSON bytes plus columns (index = record).

    ``data`` holds every record's event JSON followed by a newline (a record set aside has
    an empty line); ``ends[i]`` is the offset just past record i's newline. ``seqs[i]``,
    ``prefixes[i]`` (``facility << 3 | level``) and ``ts_usec[i]`` are its kernel header,
    ``identity`` what stamped it (id, boot, clock offset). A chunk the kernel-event stage
    merged also holds standalone events: ``events`` maps their rows to them (their seq is
    their checkpoint position, that of the record row before them).
    """

    identity: Identity
    data: bytes
    ends: array[int]
    seqs: array[int]
    prefixes: list[int]
    ts_usec: array[int]
    set_aside: int = 0  # how many records are set aside (empty lines)
    events: Mapping[int, Event] | None = None

    def __len__(self) -> int:
        return len(self.seqs)

    def start(self, index: int) -> int:
        """Offset of record ``index``'s line in ``data``."""
        return self.ends[index - 1] if index else 0

    def line(self, index: int) -> bytes:
        """The event JSON of record ``index`` (no newline; empty: set aside)."""
        return self.data[self.start(index) : self.ends[index] - 1]

    @property
    def lines(self) -> list[bytes]:
        """Every record's event JSON (built on each call: for tests and slow paths)."""
        return [self.line(index) for index in range(len(self))]

    def event(self, index: int) -> Event:
        """Record ``index`` as a standalone :class:`Event` (JSON decoded only on demand)."""
        if self.events is not None and (event := self.events.get(index)) is not None:
            return event
        boot_id, seq = self.identity.boot_id, self.seqs[index]
        timestamp_ns = self.identity.clock_offset_ns + self.ts_usec[index] * 1000
        return Event("kmsg", f"{boot_id}-{seq}", boot_id, seq, timestamp_ns, self.line(index))


@dataclass(frozen=True, slots=True)
class Slice:
    """Records ``start:stop`` of a chunk, all of them to send (none set aside or filtered)."""

    chunk: Chunk
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def boot_id(self) -> str:
        """The boot of its records."""
        return self.chunk.identity.boot_id

    @property
    def checkpoint_seq(self) -> int:
        """The seq a checkpoint may move to once the slice is delivered: its last record's."""
        return self.chunk.seqs[self.stop - 1]

    @property
    def nbytes(self) -> int:
        """Bytes of its NDJSON (newlines included)."""
        return self.chunk.ends[self.stop - 1] - self.chunk.start(self.start)

    def ndjson(self) -> memoryview:
        """Its records' NDJSON, every line ending in a newline, without a copy."""
        chunk = self.chunk
        return memoryview(chunk.data)[chunk.start(self.start) : chunk.ends[self.stop - 1]]

    def lines(self) -> list[bytes]:
        """Each record's event JSON (JSON never holds a raw newline: one split)."""
        chunk = self.chunk
        return chunk.data[chunk.start(self.start) : chunk.ends[self.stop - 1] - 1].split(b"\n")

    def part(self, start: int, stop: int) -> Slice:
        """The records ``start:stop`` of this slice (relative indices)."""
        return Slice(self.chunk, self.start + start, self.start + stop)


ParseErrorHook = Callable[[bytes, RecordParseError], None]
FailureHook = Callable[[bytes, Exception, "int | None"], None]
Encode = Callable[[Record, Identity], Event]


class ChunkEncoder:
    """Encodes windows of raw records for one identity (templates computed once)."""

    def __init__(self, identity: Identity, encode: Encode = encode_record) -> None:
        self.identity = identity
        self._encode = encode
        # Another encoder (a test seam, a debugging aid) means the reference path for all.
        self._reference_only = encode is not encode_record
        self._offset_us = identity.clock_offset_ns // 1000  # exact: see _second_bytes
        # One format per line shape, the constant parts (boot id, host) written into it.
        head = (b'{"event":"kmsg","id":' + orjson.dumps(identity.boot_id)[:-1]).replace(b"%", b"%%")
        host_boot = (
            b'","host":'
            + orjson.dumps(identity.host)
            + b',"boot_id":'
            + orjson.dumps(identity.boot_id)
            + b',"seq":'
        ).replace(b"%", b"%%")
        start = head + b'-%b","@timestamp":"%b.%06dZ' + host_boot + b'%b,"monotonic_us":%b%b'
        self._plain = start + b'","message":"%b"%b'  # a message that needs no escaping
        self._escaped = start + b'","message":%b%b'  # a message already JSON-encoded
        self._prefix_parts = {
            b"%d" % prefix: (prefix, _prefix_part(prefix) + b"-", _prefix_part(prefix))
            for prefix in range(_FAST_PREFIXES)
        }
        self._seconds: dict[int, bytes] = {}
        self._tails: dict[tuple[bytes, bytes | None], bytes] = {}

    def encode(  # noqa: C901, PLR0912, PLR0915 - the one inlined loop of the hot path
        self, raws: Iterable[bytes], on_parse_error: ParseErrorHook, on_failure: FailureHook
    ) -> Chunk:
        """Encode ``raws``; a malformed record goes to ``on_parse_error`` and is left out.

        A record whose handling raises anything else goes to ``on_failure`` and is set aside.
        """
        lines: list[bytes] = []
        seqs = array("Q")
        prefixes: list[int] = []
        stamps = array("Q")
        add_line, add_seq, add_prefix, add_stamp = (
            lines.append, seqs.append, prefixes.append, stamps.append
        )  # fmt: skip
        plain, escaped = self._plain, self._escaped
        prefix_parts, seconds_cache, offset_us = self._prefix_parts, self._seconds, self._offset_us
        tails, reference_only = self._tails, self._reference_only
        safe, u64_max, ts_usec_max, zero = _SAFE, U64_MAX, TS_USEC_MAX, _ZERO_DIGIT
        set_aside = 0
        stamp, second_start, second_end = b"", 0, 0  # the second of the last fast-path record
        for raw in raws:
            try:
                if reference_only:
                    raise _Fallback  # noqa: TRY301 - inline: no call per record
                # Fewer than four fields: a ValueError, and the reference decides.
                raw_prefix, raw_seq, raw_ts, rest = raw.split(b",", 3)
                known = prefix_parts.get(raw_prefix)
                # The digits are copied into the JSON as they are: only canonical ones (a
                # leading zero, or a zero, goes through the reference; that is one record a boot).
                if (
                    known is None
                    or not (raw_seq.isdigit() and raw_ts.isdigit())
                    or raw_seq[0] == zero
                    or raw_ts[0] == zero
                ):
                    raise _Fallback  # noqa: TRY301 - inline: no call per record
                flags, semicolon, body = rest.partition(b";")
                if not semicolon:
                    raise _Fallback  # noqa: TRY301 - inline: no call per record
                prefix, flag_part, prefix_part = known
                seq, ts_usec = int(raw_seq), int(raw_ts)
                if seq > u64_max or ts_usec > ts_usec_max:
                    raise _Fallback  # noqa: TRY301 - inline: no call per record
                caller = None
                if flags != b"-":
                    if b"," in flags:  # fields after flags: only caller= is kept
                        flags, *extras = flags.split(b",")
                        for extra in extras:
                            if extra.startswith(b"caller="):
                                caller = extra[7:]
                    if not flags:
                        flags = b"-"
                    elif flags.translate(None, safe):
                        raise _Fallback  # noqa: TRY301 - inline: no call per record
                    flag_part = prefix_part + flags
                text, _, dictionary = body.partition(b"\n")
                tail = b"}"
                if dictionary or caller is not None:
                    tail = tails.get((dictionary, caller)) or self._tail(dictionary, caller)
                wall_us = offset_us + ts_usec
                if second_start <= wall_us < second_end:  # the second of the record before
                    micros = wall_us - second_start
                else:
                    seconds, micros = divmod(wall_us, 1_000_000)
                    stamp = seconds_cache.get(seconds) or self._second_bytes(seconds)
                    second_start = seconds * 1_000_000
                    second_end = second_start + 1_000_000
                unsafe = text.translate(None, safe)
                if not unsafe:
                    line = plain % (raw_seq, stamp, micros, raw_seq, raw_ts, flag_part, text, tail)
                else:
                    if not unsafe.strip(b'"'):
                        message = b'"%b"' % text.replace(b'"', b'\\"')
                    else:
                        message = orjson.dumps(unescape(text))
                    line = escaped % (
                        raw_seq,
                        stamp,
                        micros,
                        raw_seq,
                        raw_ts,
                        flag_part,
                        message,
                        tail,
                    )
            except Exception:  # _Fallback, or any surprise of the fast path: the reference decides
                try:
                    record = parse_record(raw)
                except RecordParseError as error:
                    on_parse_error(raw, error)
                    continue
                except Exception as error:  # the safety net: one record never stops us
                    on_failure(raw, error, None)
                    continue
                prefix = record.facility_code << 3 | record.level_code
                seq, ts_usec = record.seq, record.ts_usec
                try:
                    line = self._encode(record, self.identity).json
                except Exception as error:  # the safety net: one record never stops us
                    on_failure(raw, error, seq)
                    line = b""
                    set_aside += 1
            add_line(line)
            add_seq(seq)
            add_prefix(prefix)
            add_stamp(ts_usec)
        # Offsets of line ends (newline included), then one buffer: no object per record stays.
        ends = array("Q", map(add, accumulate(map(len, lines)), count(1)))
        lines.append(b"")
        data = b"\n".join(lines)
        return Chunk(self.identity, data, ends, seqs, prefixes, stamps, set_aside)

    def _tail(self, dictionary: bytes, caller: bytes | None) -> bytes:
        """The tail of a record, kept: the same devices and callers come back all the time."""
        tail = _plain_tail(dictionary, caller) or _tail(dictionary, caller)
        if len(self._tails) >= _CACHED_TAILS:
            self._tails.clear()
        self._tails[dictionary, caller] = tail
        return tail

    def _second_bytes(self, seconds: int) -> bytes:
        # Whole microseconds are exact: (offset_ns + ts_usec * 1000) // 1000 is
        # offset_ns // 1000 + ts_usec, so seconds and microseconds match the reference.
        try:
            stamp = format_timestamp(seconds * 1_000_000_000)[:-8].encode()
        except (ValueError, OverflowError, OSError) as error:
            raise _Fallback from error
        if len(self._seconds) > 64:
            self._seconds.clear()
        self._seconds[seconds] = stamp
        return stamp


def _tail(dictionary: bytes, caller: bytes | None) -> bytes:
    """The optional members (subsystem, device, caller, fields) and the closing brace."""
    fields = parse_dictionary(dictionary) if dictionary else {}
    extra: dict[str, Any] = {}
    if (subsystem := fields.pop("SUBSYSTEM", None)) is not None:
        extra["subsystem"] = subsystem
    if (device := fields.pop("DEVICE", None)) is not None:
        extra["device"] = device
    if caller is not None:
        extra["caller"] = caller.decode("ascii", "replace")
    if fields:
        extra["fields"] = fields
    if not extra:
        return b"}"
    return b"," + orjson.dumps(extra)[1:]


def _plain_tail(dictionary: bytes, caller: bytes | None) -> bytes | None:
    """The tail without orjson when the dictionary is only plain SUBSYSTEM/DEVICE lines."""
    subsystem = device = None
    for line in dictionary.split(b"\n"):
        if line.startswith(b" SUBSYSTEM="):
            subsystem = line[11:]
        elif line.startswith(b" DEVICE="):
            device = line[8:]
        elif line.startswith(b" "):
            return None
    tail = b""
    if subsystem is not None:
        if subsystem.translate(None, _SAFE):
            return None
        tail = b',"subsystem":"%b"' % subsystem
    if device is not None:
        if device.translate(None, _SAFE):
            return None
        tail += b',"device":"%b"' % device
    if caller is not None:
        if caller.translate(None, _SAFE):
            return None
        tail += b',"caller":"%b"' % caller
    return tail + b"}"


class _Fallback(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The fast path cannot take this record: use the reference."""


def _prefix_part(prefix: int) -> bytes:
    """``,"facility":...,"flags":"`` for one prefix (the flags value follows)."""
    facility_code, level_code = prefix >> 3, prefix & 7
    return b',"facility":%b,"facility_code":%d,"level":"%b","level_code":%d,"flags":"' % (
        orjson.dumps(facility_name(facility_code)),
        facility_code,
        LEVEL_NAMES[level_code].encode(),
        level_code,
    )
