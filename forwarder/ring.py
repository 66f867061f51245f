"""Look at the kernel ring without consuming anything: its oldest and newest seq.

Used by ``kmsg-forwarder status``. A fresh open of /dev/kmsg starts at the oldest record;
there is no seek to the newest seq, so we read through (the ring holds a few thousand
records, well under a second).
"""

from __future__ import annotations

import os
from pathlib import Path

from forwarder.capture import open_source
from forwarder.capture_worker import READ_SIZE


def ring_bounds(path: Path) -> tuple[int | None, int | None]:
    """(oldest seq, newest seq) of the ring or dump at ``path``; None when empty."""
    fd, is_device = open_source(path, seek_newest=False)
    oldest = newest = None
    try:
        if is_device:
            os.set_blocking(fd, False)
            while True:
                try:
                    raw = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                except BrokenPipeError:
                    continue
                seq = _seq(raw)
                oldest = seq if oldest is None else oldest
                newest = seq
        else:
            with os.fdopen(fd, "rb", closefd=False) as dump:
                for line in dump:
                    if line[:1] not in (b" ", b"\n", b""):
                        seq = _seq(line)
                        oldest = seq if oldest is None else oldest
                        newest = seq
    finally:
        os.close(fd)
    return oldest, newest


def _seq(raw: bytes) -> int | None:
    parts = raw.split(b";", 1)[0].split(b",")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
