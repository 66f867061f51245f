"""The spool's fsync thread: the loop never fsyncs for interval or urgent syncs, the fd is safe."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

from forwarder.spool.config import SpoolConfig
from forwarder.spool.reader import SpoolReader
from forwarder.spool.spool import Spool
from tests.spool.helpers import BOOT, durable_seqs, read_all, record, records_of, wait_until


class FsyncSeam:
    """Stands in for ``os.fsync``: records who called it and on what file, may block or fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []  # (thread ident, inode of the fd at the end)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.error: OSError | None = None

    def __call__(self, fd: int) -> None:
        """Wait until released, note the caller and the fd's file, then fail or fsync."""
        self.entered.set()
        self.release.wait(10)
        inode = os.fstat(fd).st_ino  # EBADF or another file if the fd was closed under us
        self.calls.append((threading.get_ident(), inode))
        if self.error is not None:
            raise self.error
        os.fsync(fd)


def _spool(directory: Path, seam: FsyncSeam, clock: list[float], **options: object) -> Spool:
    spool = Spool(
        SpoolConfig(**options),  # type: ignore[arg-type]
        directory,
        monotonic=lambda: clock[0],
        fsync=seam,
    )
    spool.open(BOOT, 0)
    return spool


def _syncer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "spool-syncer"]


def _in_thread(action: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=action)
    thread.start()
    return thread


def test_interval_and_urgent_fsyncs_run_in_the_syncer_thread(tmp_path: Path) -> None:
    """A crit record and a due interval are fsynced by the syncer thread, never the caller's."""
    seam, clock = FsyncSeam(), [0.0]
    spool = _spool(tmp_path, seam, clock)
    spool.append([1], [record(1)])
    spool.tick()
    assert seam.calls == []  # nothing due yet
    spool.append([2], [record(2, level=2)], urgent=True)
    assert wait_until(lambda: spool.stats.fsyncs == 1)
    clock[0] += 1.5
    spool.append([3], [record(3)])
    spool.tick()
    assert wait_until(lambda: spool.stats.fsyncs == 2)
    assert [ident for ident, _ in seam.calls] == [seam.calls[0][0]] * 2
    assert seam.calls[0][0] != threading.get_ident()
    spool.close()


def test_an_urgent_record_is_durable_without_waiting_for_the_interval(tmp_path: Path) -> None:
    """With the clock standing still, a crit record still reaches the disk at once."""
    clock = [0.0]
    spool = Spool(SpoolConfig(fsync_interval_ms=3_600_000), tmp_path, monotonic=lambda: clock[0])
    spool.open(BOOT, 0)
    spool.append([1, 2], [record(1), record(2)])
    assert durable_seqs(spool) is not None
    spool.append([3], [record(3, level=2)], urgent=True)
    assert wait_until(lambda: (durable_seqs(spool) or (None, 0, None))[2] == 3)
    assert spool.stats.fsyncs == 1
    spool.close()


def test_append_returns_while_the_fsync_is_blocked_and_requests_coalesce(tmp_path: Path) -> None:
    """Appends go on while an fsync hangs; many urgent records then cost one more fsync, not many."""
    seam, clock = FsyncSeam(), [0.0]
    seam.release.clear()
    spool = _spool(tmp_path, seam, clock)
    spool.append([1], [record(1, level=2)], urgent=True)
    assert seam.entered.wait(5)
    for seq in range(2, 50):
        assert spool.append([seq], [record(seq, level=2)], urgent=True) == 1
    assert spool.stats.fsyncs == 0
    seam.release.set()
    active = spool._writer.active
    assert active is not None
    assert wait_until(lambda: active.synced_size == active.size)
    assert spool.stats.fsyncs == len(seam.calls) == 2
    spool.close()


def test_a_roll_waits_for_a_running_fsync_and_the_fd_stays_open_under_it(tmp_path: Path) -> None:
    """Sealing while the thread fsyncs waits for it; the fd fsynced is the segment's, never closed."""
    seam, clock = FsyncSeam(), [0.0]
    seam.release.clear()
    spool = _spool(tmp_path, seam, clock, segment_bytes=4096, max_bytes=1 << 20)
    spool.append([1], [record(1, level=2)], urgent=True)
    first = spool._writer.active
    assert first is not None
    inode = first.path.stat().st_ino
    assert seam.entered.wait(5)
    spool.append([2], [record(2, level=2)], urgent=True)  # a request left pending for this segment
    seqs = list(range(3, 80))
    roller = _in_thread(lambda: spool.append(seqs, [record(seq, "x" * 80) for seq in seqs]))
    roller.join(0.3)
    assert roller.is_alive(), "the seal must wait for the running fsync"
    assert not first.sealed
    seam.release.set()
    roller.join(10)
    assert not roller.is_alive()
    assert first.sealed
    assert first.synced_size == first.size
    assert seam.calls[0][1] == inode
    spool.close()
    # Every fsync ran on an open fd of the segment it meant: none on a closed or reused number.
    inodes = {segment.path.stat().st_ino for segment in spool.boots[-1].segments}
    assert all(called in inodes for _, called in seam.calls)
    assert spool.stats.fsyncs == len(seam.calls)


def test_a_quarantined_active_segment_is_closed_only_after_the_running_fsync(
    tmp_path: Path,
) -> None:
    """Dropping the active segment unsynced (quarantine, eviction) waits for the thread first."""
    seam, clock = FsyncSeam(), [0.0]
    seam.release.clear()
    spool = _spool(tmp_path, seam, clock)
    spool.append([1], [record(1, level=2)], urgent=True)
    active = spool._writer.active
    assert active is not None
    inode = active.path.stat().st_ino
    assert seam.entered.wait(5)
    spool.append([2], [record(2, level=2)], urgent=True)  # a request left pending for this segment
    dropper = _in_thread(lambda: spool.quarantine(active, "test"))
    dropper.join(0.3)
    assert dropper.is_alive(), "the fd must not be closed while the thread fsyncs it"
    seam.release.set()
    dropper.join(10)
    assert not dropper.is_alive()
    assert active.bad
    assert spool._writer.active is None
    with (tmp_path / "other").open("wb"):  # may take the closed fd's number: never fsynced
        spool.tick()
        spool.close()
    assert [called for _, called in seam.calls] == [inode] * len(seam.calls)
    assert spool.stats.fsyncs == len(seam.calls)


def test_drain_waits_for_a_running_fsync_then_syncs_what_remains(tmp_path: Path) -> None:
    """``sync`` (the drain) returns only when everything appended is durable."""
    seam, clock = FsyncSeam(), [0.0]
    seam.release.clear()
    spool = _spool(tmp_path, seam, clock)
    spool.append([1], [record(1, level=2)], urgent=True)
    assert seam.entered.wait(5)
    spool.append([2, 3], [record(2), record(3)])
    drain = _in_thread(spool.sync)
    drain.join(0.3)
    assert drain.is_alive()
    seam.release.set()
    drain.join(10)
    active = spool._writer.active
    assert active is not None
    assert active.synced_size == active.size
    assert spool.stats.fsyncs == 2
    spool.close()


def test_an_fsync_error_in_the_thread_degrades_the_spool(tmp_path: Path) -> None:
    """EIO from the thread's fsync turns the spool degraded at the next tick; it recovers later."""
    seam, clock = FsyncSeam(), [0.0]
    seam.error = OSError(errno.EIO, os.strerror(errno.EIO))
    spool = _spool(tmp_path, seam, clock)
    spool.append([1], [record(1, level=2)], urgent=True)
    assert wait_until(lambda: len(seam.calls) == 1)
    spool.tick()
    assert spool.unwritable == os.strerror(errno.EIO)
    assert (spool.stats.write_errors, spool.stats.fsyncs) == (1, 0)
    assert spool.append([2], [record(2)]) == 1  # held in memory, readers see it
    assert [e.seq for e in records_of(read_all(SpoolReader(spool, BOOT, 0)))] == [1, 2]
    seam.error = None
    clock[0] += 60
    spool.tick()
    assert spool.unwritable is None
    assert spool.record_bytes_pending() == 0
    spool.close()
    segment = spool.boots[-1].segments[-1]
    assert segment.synced_size == segment.size
    again = Spool(SpoolConfig(), tmp_path)
    again.open(BOOT, 0)
    assert [e.seq for e in records_of(read_all(SpoolReader(again, BOOT, 0)))] == [1, 2]
    again.close()


def test_fsync_always_syncs_inside_append_on_the_callers_thread(tmp_path: Path) -> None:
    """``always``: durable when append returns, fsynced by the caller, no thread started."""
    seam, clock = FsyncSeam(), [0.0]
    spool = _spool(tmp_path, seam, clock, fsync="always")
    spool.append([1], [record(1)])
    assert spool.stats.fsyncs == 1
    assert seam.calls[0][0] == threading.get_ident()
    assert durable_seqs(spool) is not None
    assert (durable_seqs(spool) or (None, 0, None))[2] == 1
    assert _syncer_threads() == []
    spool.close()


def test_the_thread_starts_at_the_first_request_and_close_joins_it(tmp_path: Path) -> None:
    """No thread until an fsync is requested ("never" and "always" start none); close ends it."""
    clock = [0.0]
    for policy in ("never", "always", "interval"):
        spool = _spool(tmp_path / policy, FsyncSeam(), clock, fsync=policy)
        spool.append([1], [record(1)])
        assert _syncer_threads() == []
        spool.append([2], [record(2, level=2)], urgent=True)
        assert len(_syncer_threads()) == (policy == "interval")
        spool.close()
        assert _syncer_threads() == []


def test_an_fsync_error_just_before_close_is_still_counted(tmp_path: Path) -> None:
    """An error the thread met is picked up by close too: each failed fsync counts once."""
    seam, clock = FsyncSeam(), [0.0]
    seam.error = OSError(errno.EIO, os.strerror(errno.EIO))
    spool = _spool(tmp_path, seam, clock)
    spool.append([1], [record(1, level=2)], urgent=True)
    assert wait_until(lambda: len(seam.calls) == 1)
    spool.close()  # the seal's own fsync fails too
    assert len(seam.calls) == 2
    assert (spool.stats.write_errors, spool.stats.fsyncs) == (2, 0)
    assert spool.unwritable == os.strerror(errno.EIO)
