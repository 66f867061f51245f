"""The /dev/kmsg parser: golden records from FACTS.md and hypothesis properties."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder.errors import RecordParseError
from forwarder.source.parser import (
    FACILITY_NAMES,
    LEVEL_NAMES,
    TS_USEC_MAX,
    U64_MAX,
    Record,
    parse_level,
    parse_record,
    render_record,
)

# -- golden cases ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "facility", "facility_code", "level", "level_code"),
    [
        (0, "kern", 0, "emerg", 0),
        (4, "kern", 0, "warning", 4),
        (14, "user", 1, "info", 6),
        (30, "daemon", 3, "info", 6),
        (191, "local7", 23, "debug", 7),
        (192, "24", 24, "emerg", 0),
        (1003, "125", 125, "err", 3),
    ],
)
def test_prefix_gives_facility_and_level(prefix, facility, facility_code, level, level_code):
    """The prefix splits into facility << 3 | level; facilities above 23 keep their number."""
    record = parse_record(f"{prefix},1,2,-;x\n".encode())
    assert (record.facility, record.facility_code) == (facility, facility_code)
    assert (record.level, record.level_code) == (level, level_code)


def test_iptables_log_record_parses_fully():
    """A real kernel record (iptables LOG, FACTS.md) gives every header field and the text."""
    raw = b"4,1234,59853793,-;[tag] IN= OUT=lo SRC=127.0.0.1 DST=127.0.0.1 LEN=29\n"
    assert parse_record(raw) == Record(
        facility_code=0,
        level_code=4,
        seq=1234,
        ts_usec=59853793,
        flags="-",
        message="[tag] IN= OUT=lo SRC=127.0.0.1 DST=127.0.0.1 LEN=29",
    )


@pytest.mark.parametrize("flags", ["-", "c", "+"])
def test_flags_are_kept(flags):
    """Normal, continuation and the old '+' flag come through as written."""
    assert parse_record(f"6,1,2,{flags};x\n".encode()).flags == flags


@pytest.mark.parametrize("header", [b"6,1,2", b"6,1,2,"])
def test_missing_flags_become_dash(header):
    """Kernel 3.5 had no flags field (and an empty one means the same): flags are '-'."""
    assert parse_record(header + b";hello\n").flags == "-"


def test_unknown_extra_header_fields_are_ignored():
    """Comma fields after flags that we do not know (future kernels) change nothing."""
    plain = parse_record(b"6,7,8,-;hello\n")
    assert parse_record(b"6,7,8,-,future=1,other;hello\n") == plain


def test_caller_field_is_parsed():
    """caller=T123 (CONFIG_PRINTK_CALLER) lands in Record.caller, among other fields."""
    record = parse_record(b"6,7,8,-,unknown=x,caller=T123;hello\n")
    assert record.caller == "T123"
    assert record.message == "hello"
    assert parse_record(b"6,7,8,-,caller=C2;hi\n").caller == "C2"


def test_header_splits_at_first_semicolon():
    """Semicolons in the text belong to the text."""
    assert parse_record(b"6,1,2,-;a;b;c\n").message == "a;b;c"


def test_escaped_backslash_is_decoded_in_one_pass():
    r"""A literal '\x41' typed by a program arrives as '\x5cx41' and decodes to those 4 characters."""
    assert parse_record(b"6,1,2,-;say \\x5cx41!\n").message == "say \\x41!"


def test_escaped_control_bytes_are_decoded():
    """Escaped tab, newline and DEL come back as those characters."""
    assert parse_record(b"6,1,2,-;a\\x09b\\x0ac\\x7f\n").message == "a\tb\nc\x7f"


def test_utf8_escaped_byte_by_byte_is_decoded():
    """UTF-8 text escaped byte by byte decodes to the original characters."""
    assert parse_record(b"6,1,2,-;caf\\xc3\\xa9 \\xe2\\x82\\xac\n").message == "café €"


def test_invalid_utf8_is_replaced():
    """Bytes that are not UTF-8 become U+FFFD instead of failing the record."""
    assert parse_record(b"6,1,2,-;bad \\xff\\xfe end\n").message == "bad \ufffd\ufffd end"


def test_invalid_escape_stays_literal():
    r"""A backslash not followed by two hex digits is kept as it is."""
    assert parse_record(b"6,1,2,-;\\xzz \\x4\n").message == "\\xzz \\x4"


def test_dictionary_lines_fill_subsystem_device_and_fields():
    """SUBSYSTEM and DEVICE continuation lines get their own keys; others go to fields."""
    raw = (
        b"6,339,5140900,-;usb 1-1: new high-speed USB device\n"
        b" SUBSYSTEM=usb\n"
        b" DEVICE=+usb:1-1\n"
        b" OTHER=a\\x20b=c\n"
    )
    record = parse_record(raw)
    assert record.message == "usb 1-1: new high-speed USB device"
    assert record.subsystem == "usb"
    assert record.device == "+usb:1-1"
    assert dict(record.fields) == {"OTHER": "a b=c"}


def test_malformed_dictionary_lines_are_skipped():
    """Lines without a leading space, an '=' or a key do not break the record."""
    raw = b"6,1,2,-;m\nNOSPACE=1\n NOEQUALS\n =novalue\n DEVICE=n2\n"
    record = parse_record(raw)
    assert record.device == "n2"
    assert record.fields == {}


def test_missing_trailing_newline_is_accepted():
    """The last record of a dump may lack its newline; the text is still complete."""
    assert parse_record(b"6,1,2,-;no newline").message == "no newline"
    assert parse_record(b"6,1,2,-;m\n DEVICE=b8:0").device == "b8:0"


def test_truncated_record_ending_in_lone_backslash():
    """A record cut by the kernel mid-escape keeps its text and the lone backslash."""
    record = parse_record(b"6,1,2,-;" + b"x" * 2000 + b"\\")
    assert record.message == "x" * 2000 + "\\"
    assert record.subsystem is None


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "no ';'"),
        (b"6,1,2,-", "no ';'"),
        (b"6,1;text", "prefix,seq,ts_usec"),
        (b"6,abc,2,-;text", "seq is not a decimal number"),
        (b"x,1,2,-;text", "prefix is not a decimal number"),
        (b"6,1,-5,-;text", "ts_usec is not a decimal number"),
        (b",1,2,-;text", "prefix is not a decimal number"),
    ],
)
def test_malformed_records_raise_a_helpful_error(raw, words):
    """Malformed records raise RecordParseError naming what is wrong."""
    with pytest.raises(RecordParseError, match=words):
        parse_record(raw)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (f"{2**64},1,2,-;x".encode(), "prefix 18446744073709551616 is beyond"),
        (f"6,{2**64},2,-;x".encode(), "seq 18446744073709551616 is beyond"),
        (f"6,1,{TS_USEC_MAX + 1},-;x".encode(), "ts_usec 18446744073709552 is beyond"),
        (b"6," + b"9" * 5000 + b",2,-;x", "seq has more digits than any u64"),
        (b"6,1," + b"0" * 5000 + b",-;x", "ts_usec has more digits than any u64"),
        (b"6,1," + b"1" * 21 + b",-;x", "ts_usec 111111111111111111111 is beyond"),
    ],
)
def test_numbers_no_kernel_writes_are_parse_errors(raw, words):
    """A prefix or seq beyond u64, or a ts_usec beyond u64 ns / 1000, is a RecordParseError."""
    with pytest.raises(RecordParseError, match=words):
        parse_record(raw)


def test_largest_kernel_numbers_parse():
    """u64 seq and prefix and the largest kernel ts_usec, even with leading zeros, are records."""
    record = parse_record(f"{U64_MAX},000{U64_MAX},{TS_USEC_MAX},-;x".encode())
    assert (record.seq, record.ts_usec) == (U64_MAX, TS_USEC_MAX)
    assert record.facility_code == U64_MAX >> 3


def test_parse_error_message_shows_a_short_preview():
    """The error quotes the start of a long bad record, not all of it."""
    with pytest.raises(RecordParseError) as caught:
        parse_record(b"y" * 5000)
    assert "yyyy" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_render_writes_the_kernel_format():
    """render_record escapes like the kernel and writes dictionary lines after the text."""
    record = Record(
        facility_code=0,
        level_code=6,
        seq=5,
        ts_usec=6,
        flags="-",
        message="a\\b\tc",
        caller="T1",
        subsystem="net",
        device="n2",
        fields=MappingProxyType({"K": "v\n"}),
    )
    assert render_record(record) == (
        b"6,5,6,-,caller=T1;a\\x5cb\\x09c\n SUBSYSTEM=net\n DEVICE=n2\n K=v\\x0a\n"
    )


# -- parse_level -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "number"), [*((n, i) for i, n in enumerate(LEVEL_NAMES))])
def test_parse_level_accepts_names(value, number):
    """Every syslog level name maps to its number."""
    assert parse_level(value) == number


@pytest.mark.parametrize(("value", "number"), [(0, 0), (7, 7), ("4", 4), ("0", 0)])
def test_parse_level_accepts_numbers(value, number):
    """Levels 0..7 are accepted as ints or digit strings."""
    assert parse_level(value) == number


@pytest.mark.parametrize("value", [8, -1, "8", "-1", "warn", "WARNING", "", "²", "\u0663"])
def test_parse_level_rejects_others(value):
    """Anything else raises ValueError that lists the valid names."""
    with pytest.raises(ValueError, match="use one of emerg"):
        parse_level(value)


@given(st.one_of(st.text(max_size=10), st.integers()))
def test_parse_level_gives_a_level_or_value_error(value):
    """Any string or int is a level 0..7 or a ValueError, never another exception."""
    try:
        level = parse_level(value)
    except ValueError:
        return
    assert 0 <= level <= 7


# -- properties --------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_any_bytes_give_a_record_or_a_parse_error(raw):
    """Arbitrary bytes parse to a Record or raise RecordParseError, nothing else."""
    try:
        record = parse_record(raw)
    except RecordParseError:
        return
    assert isinstance(record, Record)
    assert isinstance(record.facility, str)
    assert record.level in LEVEL_NAMES


_header_like = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=2**64).map(lambda n: str(n).encode()),
        st.sampled_from([b"-", b"c", b"+", b"caller=T1", b"", b"x"]),
        st.binary(max_size=6),
    ),
    max_size=7,
).map(b",".join)


@given(_header_like, st.binary(max_size=100))
def test_header_like_bytes_give_a_record_or_a_parse_error(header, body):
    """Near-valid headers with any body parse or raise RecordParseError, nothing else."""
    try:
        record = parse_record(header + b";" + body)
    except RecordParseError:
        return
    assert record.seq >= 0


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
_key = st.from_regex(r"[A-Z][A-Z0-9_]{0,14}", fullmatch=True).filter(
    lambda key: key not in {"SUBSYSTEM", "DEVICE"}
)
records = st.builds(
    Record,
    facility_code=st.integers(min_value=0, max_value=2**20),
    level_code=st.integers(min_value=0, max_value=7),
    seq=st.integers(min_value=0, max_value=2**64 - 1),
    ts_usec=st.integers(min_value=0, max_value=TS_USEC_MAX),
    flags=st.sampled_from(["-", "c", "+"]),
    message=_text,
    caller=st.none() | st.from_regex(r"[TC][0-9]{1,7}", fullmatch=True),
    subsystem=st.none() | _text,
    device=st.none() | _text,
    fields=st.dictionaries(_key, _text, max_size=4).map(MappingProxyType),
)


@given(records)
def test_rendered_record_parses_back_to_itself(record):
    """Any record rendered in kmsg format parses back to an equal Record."""
    assert parse_record(render_record(record)) == record


@given(records)
def test_rendered_record_without_trailing_newline_parses_back(record):
    """Dropping the final newline (last record of a dump) loses nothing."""
    assert parse_record(render_record(record)[:-1]) == record


def test_facility_names_cover_syslog_numbering():
    """Facilities 0..23 are the syslog names, ending at local7."""
    assert len(FACILITY_NAMES) == 24
    assert FACILITY_NAMES[23] == "local7"
