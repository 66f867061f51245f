"""The spool alone: append, read at a position, restart, reboot, bound, block, fsync."""

from __future__ import annotations

from pathlib import Path

from forwarder.spool.config import SpoolConfig
from forwarder.spool.format import HEADER_SIZE
from forwarder.spool.reader import SpooledRecord, SpoolGap, SpoolReader
from tests.spool.helpers import (
    BOOT,
    disk_bytes,
    gaps_of,
    open_spool,
    read_all,
    record,
    records_of,
    wait_until,
)


def test_records_come_back_in_order_from_any_position(tmp_path: Path) -> None:
    """A reader placed at seq N gets exactly the records after N, byte for byte."""
    spool = open_spool(tmp_path)
    raws = [record(seq) for seq in range(500)]
    spool.append(list(range(500)), raws)
    for start in (-1, 0, 63, 64, 250, 498, 499):
        got = records_of(read_all(SpoolReader(spool, BOOT, start)))
        assert [entry.seq for entry in got] == list(range(start + 1, 500))
        assert [entry.raw for entry in got] == raws[start + 1 :]


def test_append_is_idempotent_by_seq(tmp_path: Path) -> None:
    """Records at or below the tail are taken without being written again (the ring re-read)."""
    spool = open_spool(tmp_path)
    assert spool.append([1, 2, 3], [record(1), record(2), record(3)]) == 3
    assert spool.append([2, 3, 4], [record(2), record(3), record(4)]) == 3
    got = records_of(read_all(SpoolReader(spool, BOOT, -1)))
    assert [entry.seq for entry in got] == [1, 2, 3, 4]


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    """Records written before a crash (no close) are read after reopening, clock offset too."""
    spool = open_spool(tmp_path, segment_bytes=2048)
    spool.append(list(range(100)), [record(seq) for seq in range(100)])
    spool._writer.abandon()  # a process crash: nothing closed or synced
    again = open_spool(tmp_path)
    assert again.clock_offset_ns(BOOT) == 1_700_000_000_000_000_000
    got = records_of(read_all(SpoolReader(again, BOOT, 41)))
    assert [entry.seq for entry in got] == list(range(42, 100))
    again.append([100], [record(100)])
    assert records_of(read_all(SpoolReader(again, BOOT, 99)))[0].seq == 100


def test_old_boot_records_are_read_before_the_new_boot(tmp_path: Path) -> None:
    """After a reboot a reader in the old boot gets its remaining records, then the new boot's."""
    old = open_spool(tmp_path, boot_id="boot-old")
    old.append([5, 6, 7], [record(5), record(6), record(7)])
    old.close()
    new = open_spool(tmp_path, boot_id="boot-new")
    new.append([0, 1], [record(0), record(1)])
    got = records_of(read_all(SpoolReader(new, "boot-old", 5)))
    assert [(entry.boot_id, entry.seq) for entry in got] == [
        ("boot-old", 6),
        ("boot-old", 7),
        ("boot-new", 0),
        ("boot-new", 1),
    ]
    assert new.clock_offset_ns("boot-old") == 1_700_000_000_000_000_000


def test_drop_oldest_reports_exact_gaps_and_holds_the_bound(tmp_path: Path) -> None:
    """With a tiny max_bytes, a lagging reader gets one spool_full gap for exactly what was evicted."""
    spool = open_spool(tmp_path, max_bytes=4096)
    reader = SpoolReader(spool, BOOT, 9)
    for seq in range(1000):
        spool.append([seq], [record(seq)])
        assert disk_bytes(tmp_path) <= 4096
    entries = read_all(reader)
    gaps = gaps_of(entries)
    records = records_of(entries)
    assert len(gaps) == 1
    assert gaps[0].reason == "spool_full"
    assert gaps[0].first_seq == 10
    assert gaps[0].last_seq == records[0].seq - 1
    assert [entry.seq for entry in records] == list(range(records[0].seq, 1000))
    assert spool.stats.evicted_records == records[0].seq - 10 + 10  # nobody released 0..9


def test_eviction_gap_survives_a_restart(tmp_path: Path) -> None:
    """The evicted range is on disk, so a reader after a restart still gets the exact gap."""
    spool = open_spool(tmp_path, max_bytes=4096)
    spool.append(list(range(300)), [record(seq) for seq in range(300)])
    spool.close()
    again = open_spool(tmp_path, max_bytes=4096)
    entries = read_all(SpoolReader(again, BOOT, 0))
    gap = entries[0]
    assert isinstance(gap, SpoolGap)
    assert (gap.first_seq, gap.reason) == (1, "spool_full")
    first_record = entries[1]
    assert isinstance(first_record, SpooledRecord)
    assert gap.last_seq == first_record.seq - 1


def test_a_caught_up_reader_sees_no_gap_when_old_segments_go(tmp_path: Path) -> None:
    """Eviction below a reader's position costs that reader nothing."""
    spool = open_spool(tmp_path, max_bytes=4096)
    reader = SpoolReader(spool, BOOT, -1)
    for seq in range(400):
        spool.append([seq], [record(seq)])
        entries = reader.read()
        assert gaps_of(entries) == []
        assert [entry.seq for entry in records_of(entries)] == [seq]


def test_release_deletes_what_every_reader_delivered(tmp_path: Path) -> None:
    """Segments at or below the lowest checkpoint are deleted; nothing a sink needs is."""
    spool = open_spool(tmp_path, segment_bytes=1024)
    spool.append(list(range(200)), [record(seq) for seq in range(200)])
    before = disk_bytes(tmp_path)
    spool.release([(BOOT, 150), (BOOT, 120)])
    assert disk_bytes(tmp_path) < before
    got = records_of(read_all(SpoolReader(spool, BOOT, 120)))
    assert [entry.seq for entry in got] == list(range(121, 200))
    assert spool.stats.evicted_records == 0


def test_release_deletes_an_old_boot_once_every_sink_left_it(tmp_path: Path) -> None:
    """A boot every checkpoint has left behind is deleted whole."""
    open_spool(tmp_path, boot_id="boot-old").append([1], [record(1)])
    new = open_spool(tmp_path, boot_id="boot-new")
    new.append([0], [record(0)])
    new.release([("boot-new", 0)])
    assert not (tmp_path / "boot-old").exists()
    assert new.boot("boot-old") is None


def test_block_refuses_when_full_until_released(tmp_path: Path) -> None:
    """In block mode a full spool takes no more records; a release makes room again."""
    spool = open_spool(tmp_path, max_bytes=4096, when_full="block")
    taken = 0
    while taken < 1000 and spool.append([taken], [record(taken)]) == 1:
        taken += 1
    assert 0 < taken < 1000
    assert disk_bytes(tmp_path) <= 4096
    assert spool.append([taken], [record(taken)]) == 0
    spool.release([(BOOT, taken - 1)])
    assert spool.append([taken], [record(taken)]) == 1
    got = records_of(read_all(SpoolReader(spool, BOOT, -1)))
    assert gaps_of(read_all(SpoolReader(spool, BOOT, -1))) == []
    assert got[-1].seq == taken


def test_a_record_larger_than_the_spool_is_an_exact_gap(tmp_path: Path) -> None:
    """One record that cannot fit even an empty spool is evicted at once, and said so."""
    spool = open_spool(tmp_path, max_bytes=4096)
    spool.append([1, 2, 3], [record(1), b"6,2,0,-;" + b"x" * 5000, record(3)])
    entries = read_all(SpoolReader(spool, BOOT, 0))
    assert entries[0] == SpoolGap(BOOT, 1, 2, "spool_full") or entries[0] == SpoolGap(
        BOOT, 2, 2, "spool_full"
    )
    assert records_of(entries)[-1].seq == 3


def test_fsync_policy(tmp_path: Path) -> None:
    """interval: a crit record is synced at once; never: only sealing syncs; always: every append."""
    clock = [0.0]
    for policy, expected_after_info, expected_after_crit in (
        ("interval", 0, 1),
        ("never", 0, 0),
        ("always", 1, 2),
    ):
        directory = tmp_path / policy
        from forwarder.spool.spool import Spool  # noqa: PLC0415

        spool = Spool(SpoolConfig(fsync=policy), directory, monotonic=lambda: clock[0])
        spool.open(BOOT, 0)
        spool.append([1], [record(1)])
        assert spool.stats.fsyncs == expected_after_info, policy
        spool.append([2], [record(2, level=2)], urgent=True)
        # interval: the crit record's fsync runs in the syncer thread, started at once.
        wait_until(lambda: spool.stats.fsyncs >= expected_after_crit)  # noqa: B023
        assert spool.stats.fsyncs == expected_after_crit, policy
        if policy == "always":
            clock[0] = 5.0
            spool.tick()  # "always" has nothing left to sync
            assert spool.stats.fsyncs == expected_after_crit
        spool.close()
    interval = Spool(SpoolConfig(), tmp_path / "tick", monotonic=lambda: clock[0])
    interval.open(BOOT, 0)
    interval.append([1], [record(1)])
    interval.tick()
    assert interval.stats.fsyncs == 0  # not due yet
    clock[0] = 6.5
    interval.tick()
    assert wait_until(lambda: interval.stats.fsyncs == 1)
    interval.close()


def test_a_segment_shorter_than_the_spool_believes_is_quarantined_not_looped_on(
    tmp_path: Path,
) -> None:
    """A segment cut behind the spool's back (size on disk < size known) ends the read as damage."""
    spool = open_spool(tmp_path, segment_bytes=2048)
    spool.append(list(range(100)), [record(seq) for seq in range(100)])
    first = spool.current.segments[0] if spool.current is not None else None
    assert first is not None
    assert first.sealed
    with first.path.open("r+b") as cut:
        cut.truncate(HEADER_SIZE)  # at a block boundary: a read there returns no byte at all
    entries = read_all(SpoolReader(spool, BOOT, -1))
    [gap] = gaps_of(entries)
    assert (gap.reason, gap.first_seq) == ("spool_corrupt", 0)
    assert [entry.seq for entry in records_of(entries)] == list(range(gap.last_seq + 1, 100))


def test_a_block_larger_than_the_read_window_is_read_whole(tmp_path: Path) -> None:
    """One append of 600 KiB (a backlog written after the disk came back) reads back intact."""
    spool = open_spool(tmp_path)
    raws = [record(seq, "x" * 1000) for seq in range(600)]
    spool.append(list(range(600)), raws)
    entries = read_all(SpoolReader(spool, BOOT, -1))
    assert gaps_of(entries) == []
    assert [entry.raw for entry in records_of(entries)] == raws
