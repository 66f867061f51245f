"""Shared pieces of the spool tests: a spool in a directory, and reading it all."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forwarder.spool.config import SpoolConfig
from forwarder.spool.format import HEADER_SIZE, decode_frames
from forwarder.spool.reader import SpooledRecord, SpoolEntry, SpoolGap, SpoolReader
from forwarder.spool.spool import Spool

BOOT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def record(seq: int, text: str = "message", level: int = 6) -> bytes:
    """A raw kmsg record as the capture process hands it over."""
    return f"{level},{seq},{1000 + seq},-;{text} {seq}".encode()


def open_spool(directory: Path, boot_id: str = BOOT, **options: Any) -> Spool:
    """A spool opened in ``directory`` for ``boot_id``."""
    spool = Spool(SpoolConfig(**options), directory)
    spool.open(boot_id, 1_700_000_000_000_000_000)
    return spool


def read_all(reader: SpoolReader, limit: int = 10_000) -> list[SpoolEntry]:
    """Everything the reader has now (bounded)."""
    out: list[SpoolEntry] = []
    for _ in range(limit):
        entries = reader.read(256)
        if not entries:
            break
        out.extend(entries)
    return out


def records_of(entries: list[SpoolEntry]) -> list[SpooledRecord]:
    """The records among ``entries``."""
    return [entry for entry in entries if isinstance(entry, SpooledRecord)]


def gaps_of(entries: list[SpoolEntry]) -> list[SpoolGap]:
    """The gaps among ``entries``."""
    return [entry for entry in entries if isinstance(entry, SpoolGap)]


def disk_bytes(directory: Path) -> int:
    """Bytes of every segment file under ``directory``."""
    return sum(path.stat().st_size for path in directory.rglob("*.seg*"))


def durable_seqs(spool: Spool) -> tuple[Path, int, int | None] | None:
    """The active segment, its fsynced length, and the last seq inside that length."""
    segment = spool._writer.active
    if segment is None:
        return None
    data = segment.path.read_bytes()[: segment.synced_size]
    frames, _, _ = decode_frames(data, HEADER_SIZE)
    return segment.path, segment.synced_size, frames[-1].seq if frames else None


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passed (False): the syncer thread."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def crash_spool(spool: Spool) -> None:
    """The process dies: the active segment is dropped unsynced, the syncer thread ends with it."""
    spool._writer.abandon()
    spool._writer._syncer.stop()
