"""A spool on a full filesystem: it degrades to memory, then refuses, and recovers; never raises."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forwarder.spool.config import SpoolConfig
from forwarder.spool.reader import SpoolReader
from forwarder.spool.spool import Spool
from tests.spool.helpers import BOOT, gaps_of, read_all, record, records_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def test_disk_full_degrades_to_memory_then_refuses_then_recovers(small_fs: Path) -> None:
    """ENOSPC: records are held in memory (readers see them), then refused; freed space takes them all."""
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))  # leave about 96 KiB
    clock = [0.0]
    spool = Spool(
        SpoolConfig(max_bytes=16 * 1024 * 1024, memory_bytes=64 * 1024),
        small_fs / "spool",
        monotonic=lambda: clock[0],
    )
    spool.open(BOOT, 0)
    reader = SpoolReader(spool, BOOT, -1)
    text = "y" * 200
    seq = 0
    while spool.unwritable is None and seq < 5000:
        assert spool.append([seq], [record(seq, text)]) == 1
        seq += 1
    assert spool.unwritable is not None
    assert spool.stats.write_errors >= 1
    # Degraded: memory takes records until memory_bytes, then append refuses (the ring holds them).
    refused_at = None
    for _ in range(5000):
        if spool.append([seq], [record(seq, text)]) == 0:
            refused_at = seq
            break
        seq += 1
    assert refused_at is not None
    assert spool.record_bytes_pending() <= 64 * 1024
    held = records_of(read_all(reader))
    assert [entry.seq for entry in held] == list(range(refused_at))
    # Space comes back; after the retry delay the held records go to disk, and more follow.
    filler.unlink()
    clock[0] += 60
    spool.tick()
    assert spool.unwritable is None
    assert spool.record_bytes_pending() == 0
    for more in range(refused_at, refused_at + 50):
        assert spool.append([more], [record(more, text)]) == 1
    spool.close()
    again = Spool(SpoolConfig(), small_fs / "spool")
    again.open(BOOT, 0)
    entries = read_all(SpoolReader(again, BOOT, -1))
    assert gaps_of(entries) == []
    assert [entry.seq for entry in records_of(entries)] == list(range(refused_at + 50))
    assert all(entry.raw == record(entry.seq, text) for entry in records_of(entries))
    again.close()


def test_unwritable_directory_at_start_never_raises(small_fs: Path) -> None:
    """A spool that cannot even create its directory starts degraded and holds records in memory."""
    (small_fs / "filler").write_bytes(b"\0" * (1024 * 1024))
    spool = Spool(SpoolConfig(memory_bytes=4096), small_fs / "deep" / "spool")
    spool.open(BOOT, 0)
    assert spool.append([1, 2], [record(1), record(2)]) == 2
    assert spool.unwritable is not None
    assert [e.seq for e in records_of(read_all(SpoolReader(spool, BOOT, 0)))] == [1, 2]
    spool.close()
