"""Damaged spool files: every truncation and every flipped bit is survived and accounted for."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder.spool.format import HEADER_SIZE, decode_frames
from forwarder.spool.reader import SpoolGap, SpoolReader
from tests.spool.helpers import BOOT, gaps_of, open_spool, read_all, record, records_of

SEGMENT_BYTES = 640
FLIP_SEGMENT_BYTES = 300  # about 5 records: every bit of it is flipped in turn


def _build(directory: Path, count: int, segment_bytes: int = SEGMENT_BYTES) -> list[Path]:
    """A spool of ``count`` records in small segments; its segment files, oldest first."""
    spool = open_spool(directory, segment_bytes=segment_bytes)
    spool.append(list(range(count)), [record(seq) for seq in range(count)])
    spool.close()
    return sorted(directory.rglob("*.seg"))


def _damaged_copy(original: Path, target: Path, segment: Path, mutate: object) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(original, target)
    damaged = target / segment.relative_to(original)
    data = bytearray(damaged.read_bytes())
    damaged.write_bytes(mutate(data))  # type: ignore[operator]
    return target


def _first_seqs(segments: list[Path]) -> list[int]:
    return [int(path.name[:20]) for path in segments]


@pytest.mark.timeout(120)
def test_tail_truncated_at_every_offset_keeps_exactly_the_complete_prefix(tmp_path: Path) -> None:
    """Cutting the newest segment anywhere leaves exactly its complete frames; the ring refills the rest."""
    original = tmp_path / "original"
    segments = _build(original, 40)
    tail = segments[-1]
    tail_first = _first_seqs(segments)[-1]
    frames, _, _ = decode_frames(tail.read_bytes(), HEADER_SIZE)
    for cut in range(tail.stat().st_size + 1):
        copy = _damaged_copy(original, tmp_path / "copy", tail, lambda data, c=cut: bytes(data[:c]))
        spool = open_spool(copy, segment_bytes=SEGMENT_BYTES)
        kept = [frame.seq for frame in frames if frame.end <= cut] if cut >= HEADER_SIZE else []
        got = read_all(SpoolReader(spool, BOOT, -1))
        assert gaps_of(got) == [], cut
        assert [entry.seq for entry in records_of(got)] == [*range(tail_first), *kept], cut
        # The capture process re-reads the ring: what was cut is taken again, with no gap.
        spool.append(list(range(40)), [record(seq) for seq in range(40)])
        again = read_all(SpoolReader(spool, BOOT, -1))
        assert [entry.raw for entry in records_of(again)] == [record(seq) for seq in range(40)]
        assert gaps_of(again) == [], cut
        spool.close()


@pytest.mark.timeout(120)
def test_sealed_segment_truncated_at_every_offset_is_an_exact_corrupt_gap(tmp_path: Path) -> None:
    """Cutting an older segment anywhere quarantines it: one spool_corrupt gap of its exact range."""
    original = tmp_path / "original"
    segments = _build(original, 40)
    firsts = _first_seqs(segments)
    victim = segments[1]
    size = victim.stat().st_size
    for cut in range(size):
        copy = _damaged_copy(
            original, tmp_path / "copy", victim, lambda data, c=cut: bytes(data[:c])
        )
        spool = open_spool(copy, segment_bytes=SEGMENT_BYTES)
        got = read_all(SpoolReader(spool, BOOT, -1))
        assert gaps_of(got) == [SpoolGap(BOOT, firsts[1], firsts[2] - 1, "spool_corrupt")], cut
        expected = [*range(firsts[1]), *range(firsts[2], 40)]
        assert [entry.seq for entry in records_of(got)] == expected, cut
        assert [entry.raw for entry in records_of(got)] == [record(seq) for seq in expected]
        assert list((copy / BOOT).glob("*.bad")), cut
        spool.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("which", ["sealed", "tail"])
def test_every_flipped_bit_is_detected_and_never_returned(tmp_path: Path, which: str) -> None:
    """Flip each bit of a segment in turn: never an exception, never a wrong record, exact gaps."""
    original = tmp_path / "original"
    segments = _build(original, 20, segment_bytes=FLIP_SEGMENT_BYTES)
    firsts = _first_seqs(segments)
    position = 0 if which == "sealed" else len(segments) - 1
    victim = segments[position]
    bits = victim.stat().st_size * 8
    for bit in range(bits):

        def flip(data: bytearray, b: int = bit) -> bytes:
            data[b // 8] ^= 1 << (b % 8)
            return bytes(data)

        copy = _damaged_copy(original, tmp_path / "copy", victim, flip)
        spool = open_spool(copy, segment_bytes=FLIP_SEGMENT_BYTES)
        got = read_all(SpoolReader(spool, BOOT, -1))
        for entry in records_of(got):
            assert entry.raw == record(entry.seq), bit
        if which == "sealed":
            assert gaps_of(got) == [SpoolGap(BOOT, firsts[0], firsts[1] - 1, "spool_corrupt")], bit
            assert [entry.seq for entry in records_of(got)] == list(range(firsts[1], 20)), bit
        else:
            # The newest segment is cut at the flip (a torn tail) or quarantined whole; the
            # ring refills it, and with the refill nothing is missing and no gap is left.
            assert gaps_of(got) == [], bit
            spool.append(list(range(20)), [record(seq) for seq in range(20)])
            again = read_all(SpoolReader(spool, BOOT, -1))
            assert [entry.raw for entry in records_of(again)] == [record(s) for s in range(20)]
            assert gaps_of(again) == [], bit
        spool.close()


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_as_a_segment_never_raise(
    tmp_path_factory: pytest.TempPathFactory, garbage: bytes
) -> None:
    """Any bytes at all in a segment file: start-up and reading never raise or loop."""
    directory = tmp_path_factory.mktemp("garbage")
    (directory / BOOT).mkdir()
    (directory / BOOT / f"{7:020d}.seg").write_bytes(garbage)
    spool = open_spool(directory)
    entries = read_all(SpoolReader(spool, BOOT, -1))
    assert records_of(entries) == []
    spool.append([7, 8], [record(7), record(8)])
    assert [entry.seq for entry in records_of(read_all(SpoolReader(spool, BOOT, -1)))] == [7, 8]
    spool.close()
