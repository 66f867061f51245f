"""Look at the kernel ring without consuming anything: its oldest and newest seq.

Used by ``kmsg-forwarder status``. A fresh open of /dev/kmsg starts at the oldest record;
there is no seek to the newest seq, so we read through (the ring holds a few thousand
records, well under a second).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from forwarder.errors import RecordParseError
from forwarder.source.capture import open_source
from forwarder.source.capture_process import READ_SIZE
from forwarder.source.parser import parse_record


def ring_bounds(path: Path) -> tuple[int | None, int | None]:
    """(oldest seq, newest seq) of the ring or dump at ``path``; None when empty."""
    fd, is_device = open_source(path, seek_newest=False)
    seqs: list[int] = []
    try:
        raws = _device_records(fd) if is_device else _dump_lines(fd)
        for raw in raws:
            try:
                seqs.append(parse_record(raw).seq)
            except RecordParseError:
                continue  # counted by the forwarder when it reads it; not a bound here
    finally:
        os.close(fd)
    return (seqs[0], seqs[-1]) if seqs else (None, None)


def _device_records(fd: int) -> Iterator[bytes]:
    os.set_blocking(fd, False)
    while True:
        try:
            yield os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except BrokenPipeError:
            continue  # overwritten while we read: go on from the oldest still there


def _dump_lines(fd: int) -> Iterator[bytes]:
    with os.fdopen(fd, "rb", closefd=False) as dump:
        yield from (line for line in dump if line[:1] not in (b" ", b"\n", b""))
