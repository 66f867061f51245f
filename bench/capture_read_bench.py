"""The capture process's read loop alone: CPU per record, the previous loop beside today's.

    .venv/bin/python bench/capture_read_bench.py [--rounds 200]

Needs root (reads /dev/kmsg; injects nothing). Each round seeks to the oldest record and
reads the whole ring (~1,800 records after a capture bench) to EAGAIN, once with the
previous loop (``os.read`` of a new bytes per record, joined with NUL per 256 records, one
pipe write per join) and once with ``_Output.read_chunk`` (records read in place into a
zeroed segment, written from there), both writing to /dev/null. Rounds alternate, so a busy
neighbour skews both alike; the figure is thread CPU time per record. The kernel's own cost
(~1.2 µs per read here) is in both: the difference is what the loop adds around it.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

from forwarder.source.capture_process import SEPARATOR, _Output

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
    for name, (seconds, records) in totals.items():
        print(f"{name:>10}: {records:>9,} records, {seconds / records * 1e6:.3f} µs CPU per record")
    return 0


if __name__ == "__main__":
    sys.exit(main())
