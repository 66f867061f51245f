"""A lagging sink's path: spool entries become the same events the live path makes, plus exact gaps."""

from __future__ import annotations

from pathlib import Path

import orjson

from forwarder.encoding.chunk import ChunkEncoder, Slice
from forwarder.encoding.reference import Event, Identity, encode_record
from forwarder.kernel_events.placement import MergedChunk
from forwarder.routing import Item
from forwarder.source.parser import parse_record
from forwarder.spool.catch_up import SinkCatchUp
from forwarder.spool.spool import Spool
from tests.spool.helpers import open_spool, record

OFFSETS = {"boot-a": 1_000_000_000_000, "boot-b": 2_000_000_000_000}


def _catch_up(spool: Spool, position: tuple[str, int]) -> SinkCatchUp:
    def identity_of(boot_id: str) -> Identity:  # as the pipeline: the offset the spool stored
        return Identity("node-1", boot_id, spool.clock_offset_ns(boot_id) or OFFSETS[boot_id])

    return SinkCatchUp(
        "web",
        spool,
        position,
        identity_of=identity_of,
        encode=encode_record,
        min_level=7,
        on_parse_error=lambda _raw, _error: None,
        on_failure=lambda _raw, _error, _seq: None,
        updated_at="2026-12-01T00:00:00.000000Z",
    )


def _all(catch_up: SinkCatchUp) -> list[Item]:
    items: list[Item] = []
    for _ in range(100):
        more = catch_up.next_items(64)
        if more is None:
            return items
        items.extend(more)
    raise AssertionError("never caught up")


def _events(items: list[Item]) -> list[dict[str, object]]:
    """Every event the items carry, as JSON objects (a slice carries many)."""
    out: list[dict[str, object]] = []
    for item in items:
        if isinstance(item, Event):
            out.append(orjson.loads(item.json))
        elif isinstance(item, Slice):
            out.extend(orjson.loads(line) for line in bytes(item.ndjson()).splitlines())
    return out


def test_old_boot_records_keep_their_identity_then_the_reboot_gap_then_the_new_boot(
    tmp_path: Path,
) -> None:
    """From a position in an older boot: its records as the live path encodes them, then reboot, then the new boot."""
    old = open_spool(tmp_path, boot_id="boot-a")
    old.append(list(range(10)), [record(seq) for seq in range(10)])
    old.close()
    spool = Spool(old.config, tmp_path)
    spool.open("boot-b", OFFSETS["boot-b"])
    spool.append(list(range(5)), [record(seq) for seq in range(5)])
    events = _events(_all(_catch_up(spool, ("boot-a", 4))))
    old_identity = Identity("node-1", "boot-a", spool.clock_offset_ns("boot-a") or 0)
    expected_old = [
        orjson.loads(encode_record(parse_record(record(seq)), old_identity).json)
        for seq in range(5, 10)
    ]
    assert events[:5] == expected_old
    reboot = events[5]
    assert (reboot["reason"], reboot["boot_id"], reboot["first_seq"], reboot["last_seq"]) == (
        "reboot",
        "boot-a",
        10,
        None,
    )
    assert [event["id"] for event in events[6:]] == [f"boot-b-{seq}" for seq in range(5)]


def test_evicted_records_are_one_exact_spool_full_gap(tmp_path: Path) -> None:
    """A position inside evicted segments: a spool_full gap for exactly them, then the records left."""
    spool = open_spool(tmp_path, boot_id="boot-a", max_bytes=4096)
    spool.append(list(range(300)), [record(seq) for seq in range(300)])
    catch_up = _catch_up(spool, ("boot-a", 9))
    events = _events(_all(catch_up))
    gap = events[0]
    first_kept = events[1]["seq"]
    assert isinstance(first_kept, int)
    assert (gap["reason"], gap["first_seq"], gap["last_seq"]) == ("spool_full", 10, first_kept - 1)
    assert gap["lost"] == first_kept - 10
    assert [event["seq"] for event in events[1:]] == list(range(first_kept, 300))
    assert catch_up.position == ("boot-a", 299)
    assert ("spool_full", ("boot-a", 10, first_kept - 1)) in catch_up.gap_reports


def test_records_never_spooled_before_an_evicted_range_are_reported_too(tmp_path: Path) -> None:
    """A position before the spool's first record: missed_while_down up to it, then spool_full."""
    spool = open_spool(tmp_path, boot_id="boot-a", max_bytes=4096)
    spool.append(list(range(100, 400)), [record(seq) for seq in range(100, 400)])
    events = _events(_all(_catch_up(spool, ("boot-a", 49))))
    first, second = events[0], events[1]
    assert (first["reason"], first["first_seq"], first["last_seq"]) == ("missed_while_down", 50, 99)
    assert (second["reason"], second["first_seq"]) == ("spool_full", 100)
    assert second["last_seq"] == events[2]["seq"] - 1  # type: ignore[operator]


def test_kernel_events_in_a_merged_chunk_are_held_and_placed_after_their_records(
    tmp_path: Path,
) -> None:
    """A lagging sink's live merged-chunk slice gives up its event rows, placed after their records."""
    spool = open_spool(tmp_path, boot_id="boot-a")
    spool.append(list(range(6)), [record(seq) for seq in range(6)])
    catch_up = _catch_up(spool, ("boot-a", -1))
    identity = Identity("node-1", "boot-a", spool.clock_offset_ns("boot-a") or 0)
    chunk = ChunkEncoder(identity).encode(
        [record(seq) for seq in range(6)], lambda _raw, _error: None, lambda *_args: None
    )
    kernel_event = Event(
        "kernel_event", "boot-a-2-audit", "boot-a", 2, 0, b'{"event":"kernel_event"}'
    )
    merged = MergedChunk(chunk, [(2, [kernel_event])])
    catch_up.hold([merged.slice(Slice(chunk, 0, len(chunk)))])
    items = _all(catch_up)
    kinds = [event["event"] for event in _events(items)]
    assert kinds == ["kmsg", "kmsg", "kmsg", "kernel_event", "kmsg", "kmsg", "kmsg"]
