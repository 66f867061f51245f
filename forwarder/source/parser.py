r"""Parse one /dev/kmsg record into a :class:`Record` (pure: no I/O).

Format, from the kernel's ``Documentation/ABI/testing/dev-kmsg``
(https://www.kernel.org/doc/Documentation/ABI/testing/dev-kmsg)::

    <prefix>,<seq>,<ts_usec>,<flags>[,<more fields>...];<text>\n
     KEY=value\n            (zero or more dictionary lines, leading space)

``prefix`` is ``facility << 3 | level``. Bytes < 0x20, >= 0x7f and the backslash are
escaped as ``\xNN`` in the text and in dictionary values; we decode them in one pass,
then UTF-8 with replacement. Unknown header fields after ``flags`` are ignored. Numbers no
kernel can write (``prefix`` or ``seq`` beyond u64, ``ts_usec`` beyond u64 nanoseconds / 1000)
are parse errors: orjson and datetime would fail on them later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from forwarder.errors import RecordParseError

LEVEL_NAMES: Final = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
FACILITY_NAMES: Final = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
    "uucp", "cron", "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
_EMPTY_FIELDS: Final[MappingProxyType[str, str]] = MappingProxyType({})
_ESCAPE: Final = re.compile(rb"\\x([0-9a-fA-F]{2})")
_NEEDS_ESCAPE: Final = re.compile(rb"[\x00-\x1f\x7f-\xff\\]")
U64_MAX: Final = 2**64 - 1
# The kernel prints ts_nsec (a u64) / 1000: no kernel writes a larger ts_usec.
TS_USEC_MAX: Final = U64_MAX // 1000
# int() refuses longer digit strings (ValueError) where sys.set_int_max_str_digits allows
# the least: a header this short cannot hold one, a longer one is checked first.
_INT_DIGITS_SAFE: Final = 640


def level_name(level_code: int) -> str:
    """Return the syslog name of a level 0..7."""
    return LEVEL_NAMES[level_code]


def facility_name(facility_code: int) -> str:
    """Return the syslog name of a facility; unnamed facilities keep their number."""
    if facility_code < len(FACILITY_NAMES):
        return FACILITY_NAMES[facility_code]
    return str(facility_code)


def parse_level(value: str | int) -> int:
    """Turn a level name ("warning") or number (4) into its number, or raise ValueError."""
    if isinstance(value, int) or (value.isascii() and value.isdigit()):
        number = int(value)
        if 0 <= number < len(LEVEL_NAMES):
            return number
    elif value in LEVEL_NAMES:
        return LEVEL_NAMES.index(value)
    raise ValueError(f"unknown log level {value!r}: use one of {', '.join(LEVEL_NAMES)} or 0..7")


@dataclass(slots=True)  # not frozen: frozen __init__ is 2x slower on the hot path
class Record:
    """One kernel log record, fully parsed (treat as immutable)."""

    facility_code: int
    level_code: int
    seq: int
    ts_usec: int
    flags: str
    message: str
    caller: str | None = None
    subsystem: str | None = None
    device: str | None = None
    fields: MappingProxyType[str, str] = field(default_factory=lambda: _EMPTY_FIELDS)

    @property
    def level(self) -> str:
        """The syslog level name, e.g. ``warning``."""
        return LEVEL_NAMES[self.level_code]

    @property
    def facility(self) -> str:
        """The syslog facility name, e.g. ``kern``."""
        return facility_name(self.facility_code)


def parse_record(raw: bytes) -> Record:
    """Parse one raw record as read from /dev/kmsg; raise RecordParseError if malformed."""
    header, semicolon, body = raw.partition(b";")
    if not semicolon:
        raise RecordParseError(f"no ';' after the header in {_preview(raw)}")
    parts = header.split(b",")
    if len(parts) < 3:
        raise RecordParseError(f"header needs prefix,seq,ts_usec; got {_preview(header)}")
    raw_prefix, raw_seq, raw_ts = parts[0], parts[1], parts[2]
    if len(header) > _INT_DIGITS_SAFE or not (
        raw_prefix.isdigit() and raw_seq.isdigit() and raw_ts.isdigit()
    ):
        _check_numbers(raw_prefix, raw_seq, raw_ts)
    prefix, seq, ts_usec = int(raw_prefix), int(raw_seq), int(raw_ts)
    if prefix > U64_MAX or seq > U64_MAX or ts_usec > TS_USEC_MAX:
        _raise_out_of_range(prefix, seq, ts_usec)
    flags = parts[3].decode("ascii", "replace") if len(parts) > 3 and parts[3] else "-"
    caller = None
    for extra in parts[4:]:
        if extra.startswith(b"caller="):
            caller = extra[7:].decode("ascii", "replace")
    text, _, dictionary = body.partition(b"\n")
    subsystem = device = None
    fields: dict[str, str] = {}
    if dictionary:
        fields = parse_dictionary(dictionary)
        subsystem = fields.pop("SUBSYSTEM", None)
        device = fields.pop("DEVICE", None)
    return Record(
        facility_code=prefix >> 3,
        level_code=prefix & 7,
        seq=seq,
        ts_usec=ts_usec,
        flags=flags,
        message=unescape(text),
        caller=caller,
        subsystem=subsystem,
        device=device,
        fields=MappingProxyType(fields) if fields else _EMPTY_FIELDS,
    )


def _check_numbers(raw_prefix: bytes, raw_seq: bytes, raw_ts: bytes) -> None:
    """Raise RecordParseError unless all three are decimal numbers int() may convert."""
    for value, what in ((raw_prefix, "prefix"), (raw_seq, "seq"), (raw_ts, "ts_usec")):
        if not value.isdigit():
            raise RecordParseError(f"{what} is not a decimal number: {_preview(value)}")
        if len(value) > _INT_DIGITS_SAFE:
            raise RecordParseError(f"{what} has more digits than any u64: {_preview(value)}")


def _raise_out_of_range(prefix: int, seq: int, ts_usec: int) -> None:
    for number, limit, what in (
        (prefix, U64_MAX, "prefix"),
        (seq, U64_MAX, "seq"),
        (ts_usec, TS_USEC_MAX, "ts_usec"),
    ):
        if number > limit:
            raise RecordParseError(f"{what} {number} is beyond what the kernel writes (<= {limit})")


def parse_dictionary(dictionary: bytes) -> dict[str, str]:
    """The `` KEY=value`` continuation lines; lines of another shape are ignored."""
    fields: dict[str, str] = {}
    for line in dictionary.split(b"\n"):
        if not line.startswith(b" "):
            continue
        key, equals, value = line[1:].partition(b"=")
        if equals and key:
            fields[key.decode("ascii", "replace")] = unescape(value)
    return fields


def render_record(record: Record) -> bytes:
    """Render a Record the way the kernel writes it to /dev/kmsg (inverse of parse_record)."""
    header = f"{record.facility_code << 3 | record.level_code},{record.seq},{record.ts_usec},"
    header += record.flags
    if record.caller is not None:
        header += f",caller={record.caller}"
    lines = [header.encode() + b";" + _escape(record.message)]
    if record.subsystem is not None:
        lines.append(b" SUBSYSTEM=" + _escape(record.subsystem))
    if record.device is not None:
        lines.append(b" DEVICE=" + _escape(record.device))
    lines.extend(
        b" " + key.encode() + b"=" + _escape(value) for key, value in record.fields.items()
    )
    return b"\n".join(lines) + b"\n"


def unescape(raw: bytes) -> str:
    r"""Decode the kernel's ``\xNN`` escapes in one pass, then UTF-8 with replacement."""
    if b"\\" in raw:
        raw = _ESCAPE.sub(lambda match: bytes((int(match.group(1), 16),)), raw)
    return raw.decode("utf-8", "replace")


def _escape(text: str) -> bytes:
    return _NEEDS_ESCAPE.sub(lambda match: b"\\x%02x" % match.group()[0], text.encode())


def _preview(raw: bytes) -> str:
    return repr(raw[:80]) + ("..." if len(raw) > 80 else "")
