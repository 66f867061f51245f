"""Events merged into their records' chunk reach a lines-only sink as the inserted ones do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from forwarder.delivery.batcher import Batcher
from forwarder.delivery.checkpoint import Checkpoint
from forwarder.encoding.chunk import Slice
from forwarder.encoding.reference import Event
from forwarder.kernel_events import CLASSES
from forwarder.options import BatchConfig
from forwarder.routing import Item
from forwarder.sinks.base import Batch
from tests.kernel_events.support import raw_records
from tests.kernel_events.test_fast_path import IDLE_USB, records
from tests.kernel_events.test_stage import BOOT, Harness
from tests.support.forwarder import render_toml

LINK_UP = "e1000e 0000:00:1f.1 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx"
Described = tuple[str, str, str, int, int, bytes]
CORE = [  # the core bench's templates: a link, a USB connect and an audit record are events
    (6, 50, "-", None, "usb 1-1: new high-speed USB device number 3 using xhci_hcd", 1),
    (5, 50, "-", None, 'audit: type=1400 audit(1.2:3): apparmor="DENIED" operation="open"', 1),
    (6, 50, "-", None, LINK_UP, 2),
    (6, 50, "-", None, "usb 1-1: new high-speed USB device number 4 using xhci_hcd", 1),
]  # fmt: skip


def _described(items: list[Item]) -> list[Described]:
    events = Batch([item for item in items if isinstance(item, Slice | Event)]).events
    return [(e.kind, e.id, e.boot_id, e.checkpoint_seq, e.timestamp_ns, e.json) for e in events]


def _batches(streams: list[list[Item]], config: BatchConfig) -> list[tuple[bytes, int, int]]:
    """NDJSON, size and checkpoint position of each batch the batcher cuts from the reads."""

    async def cut() -> list[tuple[bytes, int, int]]:
        batcher = Batcher(config)

        async def put() -> None:  # the queue is bounded: batches are taken meanwhile
            for items in streams:
                await batcher.put(items)
            await batcher.close()

        putting = asyncio.create_task(put())
        batches = []
        while (pending := await batcher.next_batch()) is not None:
            batch = pending.batch()
            batches.append((batch.ndjson(), len(batch), pending.checkpoint_seq))
        await putting
        return batches

    return asyncio.run(cut())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(records, st.sampled_from(CORE)), max_size=40),
    st.lists(st.integers(1, 300), min_size=1, max_size=4),
    st.integers(-1, 60),
    st.integers(1, 7),
    st.integers(1024, 3000),
)
@example(CORE * 30, [64], -1, 5, 1024)
@example(IDLE_USB, [64], 10, 3, 1024)
def test_a_merged_chunk_gives_the_stream_and_batches_of_inserted_events(
    items: list[tuple[int, int, str, str | None, str, int]],
    reads: list[int],
    checkpoint_seq: int,
    max_records: int,
    max_bytes: int,
) -> None:
    """Same events, places, positions and batch cuts, with or without a restart checkpoint."""
    checkpoints = {"fresh": None, "restarted": Checkpoint(BOOT, checkpoint_seq, "")}
    inserted = Harness(dict(checkpoints))
    merged = Harness(dict(checkpoints), lines_only=("fresh", "restarted"))
    raws = raw_records(items)
    streams: dict[str, dict[str, list[list[Item]]]] = {"inserted": {}, "merged": {}}
    start, read = 0, 0
    while start < len(raws):
        size = reads[read % len(reads)]
        window, start, read = raws[start : start + size], start + size, read + 1
        for name, harness in (("inserted", inserted), ("merged", merged)):
            for sink, sink_items in harness.route(window, end=start >= len(raws)).items():
                streams[name].setdefault(sink, []).append(sink_items)
    config = BatchConfig(max_records=max_records, max_bytes=max_bytes, linger_ms=0)
    for sink in checkpoints:
        want, got = streams["inserted"].get(sink, []), streams["merged"].get(sink, [])
        assert [_described(i) for i in got] == [_described(i) for i in want]
        assert _batches(got, config) == _batches(want, config)


def test_a_lines_only_sink_gets_one_slice_per_read_however_many_events() -> None:
    """The core bench's records: each read is one slice holding its events, not one per event."""
    raws = raw_records(CORE * 30)
    merged = Harness({"file": None, "kafka": None}, lines_only=("file",))
    for start in (0, 64):
        got = merged.route(raws[start : start + 64])
        assert len(got["file"]) == 1
        assert isinstance(got["file"][0], Slice)
        kinds = [kind for kind, *_ in _described(got["file"])]
        assert kinds.count("kmsg") == 64
        assert kinds.count("kernel_event") >= 30
        assert len(got["kafka"]) > 60  # a sink that reads columns: each event between two slices
        assert _described(got["kafka"]) == _described(got["file"])


def test_the_forwarder_writes_merged_events_as_it_writes_inserted_ones(tmp_path: Path) -> None:
    """A file sink naming every class (events inserted) writes what one taking all (merged) does."""
    raws = raw_records(CORE * 600)  # 3,000 records, as many events: every read merges
    (tmp_path / "kmsg.dump").write_bytes(b"".join(raws))
    (tmp_path / "boot_id").write_text(BOOT + "\n")
    sink = {"type": "file", "batch": {"max_records": 7, "max_bytes": 1024}}
    config = {
        "host": "node-1",
        "state_dir": str(tmp_path / "state"),
        "source": {"path": str(tmp_path / "kmsg.dump"), "boot_id_path": str(tmp_path / "boot_id")},
        "sinks": {
            "merged": {**sink, "path": str(tmp_path / "merged.ndjson")},
            "inserted": {
                **sink,
                "path": str(tmp_path / "inserted.ndjson"),
                "kernel_event_classes": list(CLASSES),
            },
        },
    }
    (tmp_path / "c.toml").write_text(render_toml(config), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "forwarder", "run", "--config", str(tmp_path / "c.toml")],
        capture_output=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    merged = (tmp_path / "merged.ndjson").read_bytes()
    assert merged == (tmp_path / "inserted.ndjson").read_bytes()
    assert merged.count(b'{"event":"kernel_event"') == len(raws)
    assert merged.count(b'{"event":"kmsg"') == len(raws)
