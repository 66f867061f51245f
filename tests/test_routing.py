"""The router: skip what a sink has, report gaps (down, overwritten, reboot), filter by level."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.encoding.chunk import ChunkEncoder, Slice
from forwarder.encoding.reference import Event, Identity, encode_record
from forwarder.routing import Gap, Position, Router
from forwarder.source.parser import Record, render_record

BOOT = "boot-new"
OLD_BOOT = "boot-old"
IDENTITY = Identity(host="node-1", boot_id=BOOT, clock_offset_ns=1_000_000_000_000)
NOW_NS = 5_000_000_000_000


def record(seq, level_code=6):
    """A record with this seq and level."""
    return Record(
        facility_code=0,
        level_code=level_code,
        seq=seq,
        ts_usec=seq * 10,
        flags="-",
        message=f"m{seq}",
    )


def router(checkpoints, min_level=7):
    """A router for these checkpoints (sink name -> Checkpoint or None)."""
    return Router(IDENTITY, checkpoints, min_level=min_level, now_ns=lambda: NOW_NS)


def route_all(the_router, seqs, level_code=6):
    """Route records with these seqs; return (items per sink, stream gaps)."""
    out = {name: [] for name in the_router._cursors}
    gaps = []
    for seq in seqs:
        gap = the_router.route(record(seq, level_code), out)
        if gap is not None:
            gaps.append(gap)
    return out, gaps


def expand(items):
    """Items with every chunk slice replaced by an Event per record (what a sink is sent)."""
    expanded = []
    for item in items:
        if isinstance(item, Slice):
            expanded += [item.chunk.event(index) for index in range(item.start, item.stop)]
        else:
            expanded.append(item)
    return expanded


def kmsg_seqs(items):
    """Seqs of the kmsg events among items."""
    return [
        item.checkpoint_seq
        for item in expand(items)
        if isinstance(item, Event) and item.kind == "kmsg"
    ]


def gaps_of(items):
    """(first_seq, last_seq, lost, reason) of the gap events among items."""
    return [
        (f["first_seq"], f["last_seq"], f["lost"], f["reason"])
        for f in (item.fields for item in items if isinstance(item, Event) and item.kind == "gap")
    ]


def test_records_at_or_below_the_checkpoint_are_skipped():
    """A sink whose checkpoint is seq 10 of this boot gets 11 onwards, nothing earlier."""
    the_router = router({"a": Checkpoint(BOOT, 10, 0)})
    out, gaps = route_all(the_router, range(5, 14))
    assert kmsg_seqs(out["a"]) == [11, 12, 13]
    assert gaps_of(out["a"]) == []
    assert gaps == []


def test_no_checkpoint_takes_everything_without_a_gap():
    """A sink without a checkpoint starts at whatever comes first, and reports no gap."""
    the_router = router({"a": None})
    out, gaps = route_all(the_router, [500, 501])
    assert kmsg_seqs(out["a"]) == [500, 501]
    assert gaps_of(out["a"]) == []
    assert gaps == []
    assert the_router.startup_items() == {"a": []}


def test_first_record_above_checkpoint_is_a_missed_while_down_gap():
    """When the oldest record left is above checkpoint+1, a missed_while_down gap comes first."""
    the_router = router({"a": Checkpoint(BOOT, 10, 0)})
    out, gaps = route_all(the_router, [15, 16])
    assert gaps_of(out["a"]) == [(11, 14, 4, "missed_while_down")]
    assert out["a"][0].kind == "gap"
    assert out["a"][0].checkpoint_seq == 14
    assert kmsg_seqs(out["a"]) == [15, 16]
    assert gaps == [Gap(11, 14, "missed_while_down")]


def test_seq_jump_while_reading_is_an_overwritten_gap():
    """A jump after records were read is reported as overwritten, in order with the records."""
    the_router = router({"a": None})
    out, gaps = route_all(the_router, [1, 2, 7, 8])
    assert [item.fields.get("seq", "gap") for item in out["a"]] == [1, 2, "gap", 7, 8]
    assert gaps_of(out["a"]) == [(3, 6, 4, "overwritten")]
    assert gaps == [Gap(3, 6, "overwritten")]
    assert gaps[0].lost == 4


def test_gap_event_time_is_that_of_the_record_after_it():
    """The gap's timestamp is the next record's (deterministic on re-send), not read time."""
    the_router = router({"a": None})
    out, _ = route_all(the_router, [1, 5])
    gap, after = out["a"][1], out["a"][2]
    assert gap.timestamp_ns == after.timestamp_ns


def test_reboot_checkpoint_gives_a_reboot_gap_then_the_whole_new_boot():
    """A checkpoint of another boot yields a reboot gap (end unknown) before any record."""
    the_router = router({"a": Checkpoint(OLD_BOOT, 50, 0)})
    startup = the_router.startup_items()["a"]
    assert len(startup) == 1
    gap = startup[0]
    assert gap.fields["reason"] == "reboot"
    assert gap.fields["boot_id"] == OLD_BOOT
    assert gap.fields["first_seq"] == 51
    assert gap.fields["last_seq"] is None
    assert gap.fields["lost"] is None
    assert gap.timestamp_ns == NOW_NS
    assert (gap.boot_id, gap.checkpoint_seq) == (BOOT, -1)
    out, gaps = route_all(the_router, [0, 1, 2])
    assert kmsg_seqs(out["a"]) == [0, 1, 2]
    assert gaps_of(out["a"]) == []
    assert gaps == []


def test_reboot_then_new_boot_already_wrapped_reports_both_losses():
    """After a reboot, a new boot whose oldest record is above 0 also reports seqs 0..n-1."""
    the_router = router({"a": Checkpoint(OLD_BOOT, 50, 0)})
    out, _ = route_all(the_router, [3, 4])
    assert gaps_of(out["a"]) == [(0, 2, 3, "missed_while_down")]


def test_min_level_turns_filtered_records_into_positions():
    """Records above min_level are not sent but still move the checkpoint (Position markers)."""
    the_router = router({"a": None}, min_level=4)
    out = {"a": []}
    the_router.route(record(1, level_code=3), out)
    the_router.route(record(2, level_code=7), out)
    the_router.route(record(3, level_code=4), out)
    assert isinstance(out["a"][1], Position)
    assert out["a"][1] == Position(BOOT, 2)
    assert kmsg_seqs(out["a"]) == [1, 3]


def test_filtered_records_still_report_gaps():
    """A gap before a filtered record is still reported."""
    the_router = router({"a": Checkpoint(BOOT, 0, 0)}, min_level=0)
    out, _ = route_all(the_router, [5], level_code=6)
    assert gaps_of(out["a"]) == [(1, 4, 4, "missed_while_down")]
    assert out["a"][1] == Position(BOOT, 5)


def test_sinks_with_different_checkpoints_get_their_own_gaps():
    """Each sink skips and reports gaps against its own checkpoint; the stream gap counts once."""
    the_router = router(
        {
            "a": Checkpoint(BOOT, 10, 0),
            "b": Checkpoint(BOOT, 12, 0),
            "c": None,
            "d": Checkpoint(BOOT, 30, 0),
        }
    )
    out, gaps = route_all(the_router, [15, 16])
    assert gaps_of(out["a"]) == [(11, 14, 4, "missed_while_down")]
    assert gaps_of(out["b"]) == [(13, 14, 2, "missed_while_down")]
    assert gaps_of(out["c"]) == []
    assert out["d"] == []
    assert kmsg_seqs(out["a"]) == kmsg_seqs(out["b"]) == kmsg_seqs(out["c"]) == [15, 16]
    assert gaps == [Gap(11, 14, "missed_while_down")]


def test_sinks_share_one_encoded_event():
    """Every sink gets the same Event object for a record (encoded once)."""
    the_router = router({"a": None, "b": None})
    out, _ = route_all(the_router, [1])
    assert out["a"][0] is out["b"][0]


def test_overwrite_seen_by_a_sink_still_skipping_is_overwritten():
    """A jump after the reader has read records is 'overwritten' for every sink, even one that was still skipping."""
    the_router = router({"a": Checkpoint(BOOT, 10, 0), "b": Checkpoint(BOOT, 20, 0)})
    out, gaps = route_all(the_router, [11, 12, 13, 25])
    assert gaps == [Gap(14, 24, "overwritten")]
    assert gaps_of(out["a"]) == [(14, 24, 11, "overwritten")]
    assert gaps_of(out["b"]) == [(21, 24, 4, "overwritten")]


def test_stream_gap_is_returned_once_per_record():
    """route() returns the stream-wide gap only with the record that revealed it."""
    the_router = router({"a": None, "b": None})
    out = {"a": [], "b": []}
    assert the_router.route(record(1), out) is None
    assert the_router.route(record(4), out) == Gap(2, 3, "overwritten")
    assert the_router.route(record(5), out) is None
    assert len(gaps_of(out["a"])) == len(gaps_of(out["b"])) == 1


def test_after_a_reboot_records_the_new_boot_already_lost_count_as_lost():
    """Seqs 0..N-1 of the new boot gone before we read are a stream gap for metrics too."""
    the_router = router({"a": Checkpoint(OLD_BOOT, 70, 0, "2026-11-26T19:42:10.123456Z")})
    _, gaps = route_all(the_router, [500, 501])
    assert gaps == [Gap(0, 499, "missed_while_down")]


def test_reboot_gap_time_comes_from_the_old_checkpoint_so_resends_are_identical():
    """The reboot gap's @timestamp is the old checkpoint's time, not the time of this start."""
    old = Checkpoint(OLD_BOOT, 70, 0, "2026-11-26T19:42:10.123456Z")
    first = router({"a": old}).startup_items()["a"][0]
    again = router({"a": old}).startup_items()["a"][0]
    assert first.fields["@timestamp"] == "2026-11-26T19:42:10.123456Z"
    assert first.json == again.json


def test_a_record_set_aside_in_a_chunk_moves_every_sink_past_it_without_a_gap_for_it():
    """An empty chunk line (a record whose handling failed) is sent nowhere and is no gap; a gap before it still is."""
    the_router = router({"a": Checkpoint(BOOT, 1, 0, ""), "b": None})
    out, _gaps = route_all(the_router, [2])
    raws = [render_record(record(seq)) for seq in (5, 6, 7)]
    failed = []

    def encode_but_5_and_7(one, who):
        if one.seq in (5, 7):  # one routed alone, one in the all-sinks run
            raise RuntimeError(f"bug at {one.seq}")
        return encode_record(one, who)

    chunk = ChunkEncoder(IDENTITY, encode_but_5_and_7).encode(
        raws, pytest.fail, lambda _raw, _error, seq: failed.append(seq)
    )
    assert failed == [5, 7]
    assert chunk.lines[0] == chunk.lines[2] == b""
    assert the_router.route_chunk(chunk, out) == [Gap(3, 4, "overwritten")]
    assert gaps_of(out["a"]) == [(3, 4, 2, "overwritten")]
    assert kmsg_seqs(out["a"]) == kmsg_seqs(out["b"]) == [2, 6]
    more, later_gaps = route_all(the_router, [8])
    assert later_gaps == []
    assert gaps_of(more["a"]) == gaps_of(more["b"]) == []


CHECKPOINT_SEQS = st.none() | st.integers(-1, 12) | st.just("old boot")
WINDOW = st.lists(st.integers(0, 20), max_size=8) | st.builds(
    lambda first, count: list(range(first, first + count)), st.integers(0, 12), st.integers(0, 9)
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(WINDOW, max_size=4),
    st.dictionaries(st.sampled_from("abc"), CHECKPOINT_SEQS, min_size=1),
    st.integers(0, 7),
    st.integers(0, 7),
)
def test_routing_a_chunk_is_routing_each_record(windows, positions, min_level, level_code):
    """Chunks (jumps, repeats, skips, filtering) route exactly like records one at a time."""
    checkpoints = {
        sink: None
        if seq is None
        else Checkpoint(OLD_BOOT, 3, 0, "2026-11-26T19:42:10.123456+00:00")
        if seq == "old boot"
        else Checkpoint(BOOT, seq, 0, "2026-11-26T19:42:10.123456+00:00")
        for sink, seq in positions.items()
    }
    one_by_one, chunked = router(checkpoints, min_level), router(checkpoints, min_level)
    encoder = ChunkEncoder(IDENTITY)
    for window in windows:
        records = [record(seq, (level_code + seq) % 8) for seq in window]
        expected = {name: [] for name in positions}
        expected_gaps = [g for r in records if (g := one_by_one.route(r, expected)) is not None]
        out = {name: [] for name in positions}
        chunk = encoder.encode([render_record(r) for r in records], pytest.fail, pytest.fail)
        assert chunked.route_chunk(chunk, out) == expected_gaps
        assert {name: expand(items) for name, items in out.items()} == expected
        assert chunked.drain_gap_reports() == one_by_one.drain_gap_reports()


def test_a_chunk_after_the_largest_seq_routes_without_overflow():
    """A record at seq 2**64-2 then lower seqs (a fuzzed dump): routed one by one, no OverflowError."""
    raws = [
        b"6,18446744073709551614,1,-;last but one\n",
        b"6,26,2,-;a lower seq\n",
        b"6,27,3,-;and the next\n",
    ]
    chunk = ChunkEncoder(IDENTITY).encode(raws, pytest.fail, pytest.fail)
    out = {"a": [], "b": []}
    router({"a": None, "b": None}).route_chunk(chunk, out)
    assert [item.checkpoint_seq for item in out["a"]] == [18446744073709551614]
