"""Fuzzing the whole ``kmsg-forwarder run`` with dumps of valid, mutated and garbage records.

Whatever a dump holds, the forwarder exits 0, delivers every valid record (what the reference
parser accepts, after the router's rule: a seq above every earlier one) exactly once, and
writes nothing but JSON objects. A handful of hypothesis examples plus seeded random dumps
keep it bounded; the in-process properties check the parser and encoder on the same inputs.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.encoding.reference import Identity, encode_record
from forwarder.errors import RecordParseError
from forwarder.source.capture_process import MAX_RECORD_BYTES
from forwarder.source.parser import TS_USEC_MAX, U64_MAX, Record, parse_record, render_record
from tests.support.dumps import expected_seqs
from tests.support.forwarder import render_toml

IDENTITY = Identity(host="fuzz", boot_id="0f0f0f0f-0000-4000-8000-00000000f022", clock_offset_ns=0)
BEYOND_U64 = (str(U64_MAX + 1).encode(), b"1" + b"0" * 30, b"9" * 5000)
# Valid in prefix and ts_usec fields only: a seq of U64_MAX would hide every later record.
HUGE_NUMBERS = (*BEYOND_U64, str(TS_USEC_MAX + 1).encode(), str(U64_MAX).encode(), b"0" * 40 + b"7")

# -- generators --------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
valid_records = st.builds(
    Record,
    facility_code=st.integers(0, 30),
    level_code=st.integers(0, 7),
    seq=st.integers(0, 60) | st.integers(0, U64_MAX),
    ts_usec=st.integers(0, TS_USEC_MAX),
    flags=st.sampled_from(["-", "c", "+"]),
    message=_text,
    caller=st.none() | st.just("T1"),
    subsystem=st.none() | st.just("net"),
    device=st.none() | _text,
    fields=st.dictionaries(st.sampled_from(["A", "KEY"]), _text, max_size=2).map(MappingProxyType),
)


def _flip_bit(raw: bytes, rng: random.Random) -> bytes:
    position = rng.randrange(len(raw))
    # In the seq field, a flip that leaves a digit would make a larger valid seq, which
    # hides every later record (the router's rule): flip a digit into a letter instead.
    first_comma = raw.find(b",")
    in_seq = first_comma < position < raw.find(b",", first_comma + 1)
    bit = 0x40 if in_seq else 1 << rng.randrange(8)
    return raw[:position] + bytes((raw[position] ^ bit,)) + raw[position + 1 :]


def _cut(raw: bytes, rng: random.Random) -> bytes:
    # Still ended: a cut glued to the next record could make a huge valid seq.
    return raw[: rng.randrange(len(raw))] + b"\n"


def _huge_number(raw: bytes, rng: random.Random) -> bytes:
    fields = raw.split(b",", 3)
    index = rng.randrange(min(3, len(fields)))
    fields[index] = rng.choice(BEYOND_U64 if index == 1 else HUGE_NUMBERS)
    return b",".join(fields)


def _overlong(raw: bytes, rng: random.Random) -> bytes:
    return raw[:-1] + b"x" * rng.randint(MAX_RECORD_BYTES - len(raw), 3 * MAX_RECORD_BYTES) + b"\n"


def _inserting(extra: bytes) -> Callable[[bytes, random.Random], bytes]:
    def insert(raw: bytes, rng: random.Random) -> bytes:
        position = rng.randrange(len(raw))
        return raw[:position] + extra + raw[position:]

    return insert


MUTATIONS = (
    _flip_bit,
    _cut,
    _huge_number,
    _overlong,
    _inserting(b"\x00"),
    _inserting(b"\x00\x00\x00"),
    _inserting(b"\xff\xfe\xc3"),  # invalid UTF-8
    _inserting(b"\\"),  # a stray backslash
    _inserting(b"\x01"),  # the capture stream's control byte
    lambda raw, _rng: raw.replace(b";", b"", 1),  # no ';'
)


def mutate(raw: bytes, rng: random.Random) -> bytes:
    """One of the ways a record goes bad: bit flip, cut, huge number, NUL, overlong, etc."""
    return rng.choice(MUTATIONS)(raw, rng)


def garbage_line(rng: random.Random) -> bytes:
    """Random bytes, usually ending a line."""
    line = rng.randbytes(rng.randint(0, 80))
    return line + b"\n" if rng.random() < 0.8 else line


def seeded_dump(seed: int, pieces: int) -> bytes:
    """A dump of valid records (rising, repeated and falling seqs), mutations and garbage."""
    rng = random.Random(seed)
    out = []
    seq = 0
    for _ in range(pieces):
        seq = max(0, seq + rng.choice((1, 1, 1, 2, 0, -3, 50)))
        record = Record(
            rng.randint(0, 23), rng.randint(0, 7), seq, seq * 1000 + 7, "-", f"r{seq} é \\x"
        )
        raw = render_record(record)
        roll = rng.random()
        if roll < 0.6:
            out.append(raw)
        elif roll < 0.85:
            out.append(mutate(raw, rng))
        else:
            out.append(garbage_line(rng))
    return b"".join(out)


@st.composite
def dumps(draw: st.DrawFn) -> bytes:
    """Hypothesis dumps: valid records, mutated ones and garbage lines, in any order."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    pieces = []
    for record in draw(st.lists(valid_records, max_size=40)):
        raw = render_record(record)
        choice = draw(st.sampled_from(("valid", "valid", "mutated", "garbage")))
        if choice == "valid":
            pieces.append(raw)
        elif choice == "mutated":
            pieces.append(mutate(raw, rng))
        else:
            pieces.append(draw(st.binary(max_size=60)))
    return b"".join(pieces)


# -- the whole forwarder -----------------------------------------------------------------


def run_forwarder(workdir: Path, dump: bytes) -> subprocess.CompletedProcess[bytes]:
    """`kmsg-forwarder run` over ``dump`` into a file sink (fresh state)."""
    (workdir / "kmsg.dump").write_bytes(dump)
    (workdir / "boot_id").write_text(IDENTITY.boot_id + "\n")
    config = {
        "state_dir": str(workdir / "state"),
        "source": {"path": str(workdir / "kmsg.dump"), "boot_id_path": str(workdir / "boot_id")},
        "sinks": {"out": {"type": "file", "path": str(workdir / "out.ndjson")}},
    }
    (workdir / "c.toml").write_text(render_toml(config), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "forwarder", "run", "--config", str(workdir / "c.toml"),
         "--log-format", "json"],
        capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def assert_forwarded_exactly(dump: bytes) -> None:
    """Run the forwarder on ``dump``: exit 0, the valid seqs once each in order, only JSON objects."""
    with tempfile.TemporaryDirectory(prefix="kft-fuzz-") as tmp:
        workdir = Path(tmp)
        result = run_forwarder(workdir, dump)
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
        out = workdir / "out.ndjson"
        lines = out.read_bytes().splitlines() if out.exists() else []
        events = [orjson.loads(line) for line in lines]
        assert all(isinstance(event, dict) for event in events)
        seqs = [event["seq"] for event in events if event["event"] == "kmsg"]
        assert seqs == expected_seqs(dump)
        assert not (workdir / "state" / "deadletter" / "@source.ndjson").exists()


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(dumps())
def test_any_dump_is_forwarded_without_a_crash(dump):
    """A hypothesis dump of valid, mutated and garbage records: exit 0, each valid record once, JSON only."""
    assert_forwarded_exactly(dump)


@pytest.mark.parametrize("seed", [8, 2026])
def test_seeded_garbage_dump_is_forwarded_without_a_crash(seed):
    """A seeded 3000-piece dump (every mutation, huge numbers, NUL, 200 KB lines): exit 0, each valid record once."""
    dump = (
        seeded_dump(seed, 3000) + b"6,999999,1,-;" + b"L" * 200_000 + b"\n" + b"6,1000000,1,-;end\n"
    )
    assert_forwarded_exactly(dump)


# -- in process: parser and encoder ------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(valid_records, st.integers(0, 2**32))
def test_mutated_records_parse_or_fail_cleanly_and_always_encode(record, seed):
    """A mutated record is a Record or a RecordParseError, and any Record it gives encodes to JSON."""
    raw = mutate(render_record(record), random.Random(seed))
    try:
        parsed = parse_record(raw)
    except RecordParseError:
        return
    assert isinstance(orjson.loads(encode_record(parsed, IDENTITY).json), dict)


@given(st.binary(max_size=400))
def test_any_bytes_parse_or_fail_cleanly_and_always_encode(raw):
    """Arbitrary bytes give a Record that encodes, or a RecordParseError: never another exception."""
    try:
        parsed = parse_record(raw)
    except RecordParseError:
        return
    assert isinstance(orjson.loads(encode_record(parsed, IDENTITY).json), dict)
