"""Capture's per-record work on both sides of the pipe: the previous code beside today's.

    .venv/bin/python bench/capture_read_bench.py [--rounds 200]

Needs root (reads /dev/kmsg; injects nothing). Each round seeks to the oldest record and
reads the whole ring (~1,800 records after a capture bench) to EAGAIN, once with the
previous loop (``os.read`` of a new bytes per record, joined with NUL per 256 records, one
pipe write per join) and once with ``_Output.read_chunk`` (records read in place into a
zeroed segment, written from there), both writing to /dev/null. Rounds alternate, so a busy
neighbour skews both alike; the figure is thread CPU time per record. The kernel's own cost
(~1.2 µs per read here) is in both: the difference is what the loop adds around it.

Then the forwarder's side: 200,000 flood-sized frames (86 bytes) cut from the pipe's byte
stream into ``Frame`` objects by ``Capture._parse``, beside the previous cut (two copies of
each window, a frozen dataclass per record).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from forwarder.config import SourceConfig
from forwarder.source.capture import PARSE_WINDOW_BYTES, Capture
from forwarder.source.capture_process import CONTROL, SEPARATOR, FrameKind, _Output

KMSG = "/dev/kmsg"
READ_SIZE = 16_384
PREVIOUS_BURST = 256


def previous_loop(source_fd: int, out_fd: int) -> int:
    """The loop before: one new bytes per read, joined per burst (two copies), one write."""
    records = 0
    while True:
        frames: list[bytes] = []
        append, read = frames.append, os.read
        try:
            for _ in range(PREVIOUS_BURST):
                append(read(source_fd, READ_SIZE))
        except BlockingIOError:
            pass
        if frames:
            os.write(out_fd, memoryview(SEPARATOR.join(frames) + SEPARATOR))
            records += len(frames)
        if len(frames) < PREVIOUS_BURST:
            return records


def chunk_loop(source_fd: int, output: _Output) -> int:
    """Today's loop: read in place until dry, then write what is queued."""
    readinto = io.FileIO(source_fd, "rb", closefd=False).readinto
    records = 0
    while True:
        read, failure = output.read_chunk(readinto)
        records += read
        if failure is not None:
            output.flush()
            return records


@dataclass(frozen=True, slots=True)
class PreviousFrame:
    """The frame as it was: frozen, so each one is built through object.__setattr__."""

    kind: FrameKind
    payload: bytes


def previous_parse(stream: bytes) -> int:
    """The previous cut: per window, a bytearray slice copied into bytes, then a frame each."""
    buffer, offset, frames = bytearray(stream), 0, 0
    kinds = {kind.value: kind for kind in FrameKind}
    while offset < len(buffer):
        last = buffer.rfind(SEPARATOR, offset, offset + PARSE_WINDOW_BYTES)
        for raw in bytes(buffer[offset:last]).split(SEPARATOR):
            if raw.startswith(CONTROL):
                frames += PreviousFrame(kinds[raw[1]], raw[2:]) is not None
            else:
                frames += PreviousFrame(FrameKind.RECORD, raw) is not None
        offset = last + 1
    return frames


def current_parse(stream: bytes) -> int:
    """Today's cut, through the real Capture (its pipe side only)."""
    capture = Capture(SourceConfig(path=Path(KMSG)), seek_newest=False)
    capture._received(stream)  # noqa: SLF001 - the bench feeds the parser directly
    frames = 0
    while parsed := capture._parse():  # noqa: SLF001
        frames += len(parsed)
    return frames


def parse_rows(rounds: int) -> None:
    """Both cuts, alternating, over the same stream."""
    record = b"14,2407021,461799206,-;" + b"x" * 51 + b"-00000001\n"
    stream = (record + SEPARATOR) * 200_000
    totals = {"previous": [0.0, 0], "_parse": [0.0, 0]}
    for _ in range(max(1, rounds // 20)):
        for name, total in totals.items():
            started = time.thread_time()
            frames = previous_parse(stream) if name == "previous" else current_parse(stream)
            total[0] += time.thread_time() - started
            total[1] += frames
    print("forwarder side, frames cut from the pipe's stream:")
    for name, (seconds, frames) in totals.items():
        print(f"{name:>10}: {frames:>9,} frames, {seconds / frames * 1e6:.3f} µs CPU per frame")


def main() -> int:
    """Alternate the two loops over the ring and print CPU µs per record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    source_fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    out_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    output = _Output(out_fd, 1 << 30)
    totals = {"previous": [0.0, 0], "read_chunk": [0.0, 0]}
    for _ in range(args.rounds):
        for name, total in totals.items():
            os.lseek(source_fd, 0, os.SEEK_SET)
            started = time.thread_time()
            try:
                if name == "previous":
                    records = previous_loop(source_fd, out_fd)
                else:
                    records = chunk_loop(source_fd, output)
            except BrokenPipeError:  # someone flooded the ring meanwhile: skip the round
                continue
            total[0] += time.thread_time() - started
            total[1] += records
    print(f"kernel {os.uname().release}, Python {sys.version.split()[0]}, {args.rounds} rounds")
    print("capture process, reading the ring:")
    for name, (seconds, records) in totals.items():
        print(f"{name:>10}: {records:>9,} records, {seconds / records * 1e6:.3f} µs CPU per record")
    parse_rows(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
