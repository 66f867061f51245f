"""In-memory view of the spool's files: boots, segments, holes (no writing here).

``<spool>/<boot>/<first_seq:020d>.seg`` are segments, ``*.seg.bad`` quarantined ones, and
``<boot>/evicted.json`` says which seqs ``drop_oldest`` evicted from the head of that boot.
File names are the index: a seq's segment is found by bisecting the first seqs, then a
sparse (seq, offset) list per segment, filled as frames are written or read, narrows the
scan inside it. Nothing here is a cursor: sinks' checkpoints are the only ones.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from forwarder.spool.format import HEADER_SIZE

SpoolGapReason = Literal["spool_full", "spool_corrupt"]
SEGMENT_NAME = re.compile(r"(\d{20})\.seg(\.bad)?")
EVICTED_FILE = "evicted.json"
_SAFE_BOOT = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(slots=True)
class Segment:
    """One segment file; ``last_seq`` None until known (scanned, or the next one's header)."""

    first_seq: int
    path: Path
    size: int
    last_seq: int | None = None
    bad: bool = False
    sealed: bool = True
    synced_size: int = 0
    index: list[tuple[int, int]] = field(default_factory=list)  # (seq, offset) ascending

    def seek(self, seq: int) -> int:
        """An offset at or before the frame of ``seq``."""
        position = bisect_right(self.index, (seq, 2**63)) - 1
        return self.index[position][1] if position >= 0 else HEADER_SIZE

    def note(self, seq: int, offset: int) -> None:
        """Remember where the frame of ``seq`` starts (kept sparse and ascending)."""
        if not self.index or seq > self.index[-1][0]:
            self.index.append((seq, offset))


@dataclass(slots=True)
class Boot:
    """Everything the spool holds of one boot."""

    boot_id: str
    directory: Path
    clock_offset_ns: int
    created_ns: int
    segments: list[Segment] = field(default_factory=list)  # by first_seq, bad ones included
    evicted: tuple[int, int] | None = None  # (first, last) seq dropped from the head
    tail_seq: int | None = None  # the newest seq stored (I2: only larger ones are appended)

    def good(self) -> list[Segment]:
        """Readable segments, oldest first."""
        return [segment for segment in self.segments if not segment.bad]

    def holes(self) -> list[tuple[int, int | None, SpoolGapReason]]:
        """Seq ranges the spool lost, oldest first; an open end closes at the next record."""
        holes: list[tuple[int, int | None, SpoolGapReason]] = []
        if self.evicted is not None:
            holes.append((self.evicted[0], self.evicted[1], "spool_full"))
        for position, segment in enumerate(self.segments):
            if not segment.bad:
                continue
            later = self.segments[position + 1 :]
            end = later[0].first_seq - 1 if later else segment.last_seq
            holes.append((segment.first_seq, end, "spool_corrupt"))
        return holes

    def oldest_seq(self) -> int | None:
        """First seq of the oldest readable segment."""
        good = self.good()
        return good[0].first_seq if good else None

    def save_evicted(self) -> None:
        """Write ``evicted.json`` atomically (before the segments it names are unlinked)."""
        if self.evicted is None:
            return
        data = orjson.dumps(
            {
                "boot_id": self.boot_id,
                "first_seq": self.evicted[0],
                "last_seq": self.evicted[1],
                "created_ns": self.created_ns,
                "clock_offset_ns": self.clock_offset_ns,
            }
        )
        target = self.directory / EVICTED_FILE
        temporary = target.with_name(EVICTED_FILE + ".tmp")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(target)
        fsync_directory(self.directory)


def boot_directory_name(boot_id: str) -> str:
    """A file name for ``boot_id`` (the id itself when it is a safe name, else its hex)."""
    if _SAFE_BOOT.fullmatch(boot_id) and boot_id not in {".", ".."}:
        return boot_id
    return "x" + boot_id.encode().hex()[:120]


def segment_name(first_seq: int) -> str:
    """The file name of the segment starting at ``first_seq``."""
    return f"{first_seq:020d}.seg"


def fsync_directory(directory: Path) -> None:
    """Make a create, rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_evicted(directory: Path) -> dict[str, object] | None:
    """The boot's ``evicted.json``, or None if missing or unreadable."""
    try:
        data = orjson.loads((directory / EVICTED_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    keys = ("first_seq", "last_seq", "created_ns", "clock_offset_ns")
    if not isinstance(data.get("boot_id"), str) or any(
        type(data.get(key)) is not int for key in keys
    ):
        return None
    return data
