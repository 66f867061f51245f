"""The chunk encoder writes exactly the bytes of the reference parse_record + encode_record."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.encoding.chunk import ChunkEncoder
from forwarder.encoding.reference import Identity, encode_record
from forwarder.errors import RecordParseError
from forwarder.source.parser import Record, parse_record, render_record

IDENTITY = Identity(host='node "1"\\', boot_id="3f1c0000-0000-4000-8000-000000000001",
                    clock_offset_ns=1_764_182_470_000_123_000)  # fmt: skip
TEXT = st.text(
    st.one_of(
        st.sampled_from('abc "\\\n\t\x00\x1b\x7f=;,é€😀\ufffd'),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=40,
)
KEY = st.text(st.sampled_from("ABCDEFGHIJ_SUBSYTMVC"), min_size=1, max_size=9)
RECORDS = st.builds(
    Record,
    facility_code=st.integers(0, 40),
    level_code=st.integers(0, 7),
    seq=st.integers(0, 2**64 - 1),
    ts_usec=st.integers(0, 2**42) | st.integers(2**64 // 1000 - 3, 2**64 // 1000 + 3),
    flags=st.sampled_from(["-", "c", "+", "", '"', "x\\"]),
    message=TEXT,
    caller=st.none() | st.sampled_from(["T1", "C12", 'T"9', "é"]),
    subsystem=st.none() | TEXT,
    device=st.none() | TEXT,
    fields=st.dictionaries(KEY, TEXT, max_size=3).map(MappingProxyType),
)
RAW_BYTES = st.binary(max_size=60).map(lambda tail: b"6,1,2,-;" + tail)
MANGLED = st.tuples(st.sampled_from([b"6", b"06", b"x", b"", b"999999"]),
                    st.sampled_from([b"1", b"0012", b"", b"-1", b"18446744073709551615", b"0",
                                     b"+5", b" 5", b"1_0", b"18446744073709551616"]),
                    st.sampled_from([b"0", b"77", b"a", b"007", b"+3", b"3_0", b"00"]),
                    st.sampled_from([b"", b",-", b",c,caller=T1", b",-,other", b",\xff"]),
                    st.sampled_from([b";m\n", b"m\n", b";\n", b";a\n X=1\nbad\n =v\n"]),
                    ).map(lambda parts: parts[0] + b"," + parts[1] + b"," + b"".join(parts[2:]))  # fmt: skip


def reference(raw: bytes) -> bytes | None:
    """The reference encoding, or None when the record does not parse."""
    try:
        return encode_record(parse_record(raw), IDENTITY).json
    except RecordParseError:
        return None


def fail(raw: bytes, error: Exception, _seq: int | None) -> None:
    """No valid or malformed record may reach the failure hook: it is for bugs only."""
    pytest.fail(f"{raw!r} failed: {error!r}")


def check(raws: list[bytes]) -> None:
    """Encode ``raws`` as one chunk and compare every line and column with the reference."""
    rejected: list[bytes] = []
    chunk = ChunkEncoder(IDENTITY).encode(raws, lambda raw, _error: rejected.append(raw), fail)
    expected = [(raw, reference(raw)) for raw in raws]
    assert rejected == [raw for raw, json in expected if json is None]
    parsed = [parse_record(raw) for raw, json in expected if json is not None]
    assert chunk.lines == [json for _, json in expected if json is not None]
    assert list(chunk.seqs) == [record.seq for record in parsed]
    assert list(chunk.ts_usec) == [record.ts_usec for record in parsed]
    assert chunk.prefixes == [r.facility_code << 3 | r.level_code for r in parsed]


@settings(max_examples=400, deadline=None)
@given(st.lists(RECORDS, max_size=8))
def test_rendered_records_encode_like_the_reference(records):
    """Records with escapes, dictionaries, callers, every facility and level: identical bytes."""
    check([render_record(record) for record in records])


@settings(max_examples=300, deadline=None)
@given(st.lists(RAW_BYTES | MANGLED, max_size=8))
def test_raw_and_malformed_bytes_encode_like_the_reference(raws):
    """Raw control, non-ASCII and malformed input: identical bytes, the same records refused."""
    check(raws)


def test_every_facility_and_level_encodes_like_the_reference():
    """Each prefix 0..255 (named and numbered facilities) gives the reference bytes."""
    check([b"%d,%d,%d,-;message\n" % (prefix, prefix, prefix * 1000) for prefix in range(256)])


def test_a_record_whose_encoding_raises_is_set_aside_as_an_empty_line():
    """An encoder failure on one record reaches the failure hook with its seq; the chunk keeps it as an empty line."""

    def failing_for_seq_2(record, identity):
        if record.seq == 2:
            raise RuntimeError("boom")
        return encode_record(record, identity)

    raws = [b"6,%d,100,-;message %d\n" % (seq, seq) for seq in (1, 2, 3)]
    failures = []
    chunk = ChunkEncoder(IDENTITY, failing_for_seq_2).encode(
        raws, pytest.fail, lambda raw, error, seq: failures.append((raw, str(error), seq))
    )
    assert failures == [(raws[1], "boom", 2)]
    assert list(chunk.seqs) == [1, 2, 3]
    assert chunk.lines[1] == b""
    assert chunk.lines[0] == encode_record(parse_record(raws[0]), IDENTITY).json
