"""End to end on the real kernel: the spool keeps an outage longer than the ring, and restarts.

An HTTP sink answers 503 (a loopback receiver) while a file sink beside it must keep
receiving; more records than the ring holds (~2,000 here) are written, the forwarder is
SIGKILLed in the middle and started again, then the receiver recovers: every record
arrives and no gap is reported. The same with a small ``max_bytes`` gives exact
``spool_full`` gaps and the bound holds; a swapped boot_id file plays a reboot.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.receivers.base import Reply
from tests.receivers.http import HttpReceiver
from tests.support.forwarder import StartForwarder, free_port, iter_gaps, read_ndjson
from tests.support.kernel import inject, requires_kernel, unique_tag
from tests.support.wait import wait_until, wait_until_async

pytestmark = [requires_kernel, pytest.mark.kernel, pytest.mark.timeout(300)]
WAIT_S = 90.0
FLOOD_LOCK = Path("/tmp/kmsg-flood.lock")
DOWN = Reply(503, "down for maintenance")
GROUP = 500  # records written at once: a quarter of what the ring holds


@pytest.fixture
def flood_lock() -> Iterator[None]:
    """Hold the shared lock for writing thousands of records to /dev/kmsg (bounded wait)."""
    fd = os.open(FLOOD_LOCK, os.O_RDWR | os.O_CREAT, 0o666)

    def acquired() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        wait_until(acquired, timeout_s=240, interval_s=0.2, what="the kmsg flood lock")
        yield
    finally:
        os.close(fd)  # releases the lock


def _config(tmp_path: Path, receiver: HttpReceiver, **spool: Any) -> dict[str, Any]:
    return {
        "host": "e2e-node",
        "state_dir": tmp_path / "state",
        "shutdown_timeout_s": 2,
        "batch": {"max_records": 50, "linger_ms": 20},
        "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 300},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "spool": spool,
        "sinks": {
            "web": {"type": "http", "endpoint": f"{receiver.url}/in"},
            "out": {"type": "file", "path": tmp_path / "out.ndjson"},
        },
    }


def _tagged(tmp_path: Path, tag: str) -> list[dict[str, Any]]:
    return [e for e in read_ndjson(tmp_path / "out.ndjson") if tag in str(e.get("message"))]


async def _file_has(tmp_path: Path, tag: str, count: int) -> None:
    def arrived() -> bool:
        return len({e["seq"] for e in _tagged(tmp_path, tag)}) >= count

    await wait_until_async(arrived, timeout_s=WAIT_S, interval_s=0.2, what=f"{count} in the file")


def _messages(tag: str, first: int, count: int) -> list[str]:
    return [
        f"{tag} spooled record {index:05d} " + "p" * 60 for index in range(first, first + count)
    ]


async def test_outage_longer_than_the_ring_with_sigkill_loses_nothing(
    tmp_path: Path, flood_lock: None, start_forwarder: StartForwarder
) -> None:
    """503 for 6,000 records (3 rings), SIGKILL in the middle: the file sink never waits, all arrive, no gap."""
    tag = unique_tag()
    async with HttpReceiver(path="/in") as receiver:
        receiver.script(*[DOWN] * 1_000_000)
        config = _config(tmp_path, receiver)
        first = await asyncio.to_thread(start_forwarder, "first", config)
        await _inject_paced(tmp_path, tag, 0, 3000)  # the down sink holds nobody back
        first.kill()
        second = await asyncio.to_thread(start_forwarder, "second", config)
        await _inject_paced(tmp_path, tag, 3000, 3000)
        assert receiver.events_containing(tag) == []

        async def web_failing() -> bool:
            status, _ = await asyncio.to_thread(second.http_get, "/readyz")
            return status == 503

        await wait_until_async(web_failing, timeout_s=WAIT_S, interval_s=0.2, what="/readyz 503")
        receiver._script.clear()  # the receiver recovers

        def all_arrived() -> bool:
            return len(receiver.events_containing(tag)) == 6000

        await wait_until_async(all_arrived, timeout_s=WAIT_S, interval_s=0.2, what="all 6,000")
        assert await asyncio.to_thread(second.stop) == 0
    web = receiver.events_containing(tag)  # one per id, by seq
    assert [e["message"] for e in web] == _messages(tag, 0, 6000)
    ours = range(web[0]["seq"], web[-1]["seq"] + 1)  # other writers' records may lie between
    assert [g for g in receiver.events.values() if _gap_touches(g, ours)] == []
    assert [
        g for g in iter_gaps(read_ndjson(tmp_path / "out.ndjson")) if _gap_touches(g, ours)
    ] == []
    by_id = {e["id"]: e for e in _tagged(tmp_path, tag)}
    assert all(by_id[e["id"]]["@timestamp"] == e["@timestamp"] for e in web)  # same identity


def _gap_touches(event: dict[str, Any], seqs: range) -> bool:
    """A gap event about any seq of ``seqs`` (a reboot gap has no last seq: it is open)."""
    if event.get("event") != "gap":
        return False
    last = event["last_seq"] if event["last_seq"] is not None else seqs.stop
    return bool(event["first_seq"] <= seqs.stop - 1 and last >= seqs.start)


async def _inject_paced(tmp_path: Path, tag: str, first: int, count: int) -> None:
    """Write tagged records in groups, each once the file has the last: the ring never overwrites ours.

    Groups are a quarter of the ring (~2,000 records), so however busy the machine, every
    record is read before the kernel could drop it.
    """
    for start in range(first, first + count, GROUP):
        size = min(GROUP, first + count - start)
        await asyncio.to_thread(inject, _messages(tag, start, size))
        await _file_has(tmp_path, tag, start + size)


async def test_small_spool_gives_exact_spool_full_gaps_and_holds_its_bound(
    tmp_path: Path, flood_lock: None, start_forwarder: StartForwarder
) -> None:
    """With max_bytes 64 KiB the down sink gets exact spool_full gaps; the files never exceed it."""
    tag = unique_tag()
    max_bytes = 65536
    async with HttpReceiver(path="/in") as receiver:
        receiver.script(*[DOWN] * 1_000_000)
        config = _config(tmp_path, receiver, max_bytes=max_bytes)
        run = await asyncio.to_thread(start_forwarder, "first", config)
        for part in range(6):
            inject(_messages(tag, part * 500, 500))
            await _file_has(tmp_path, tag, (part + 1) * 500)
            segments = (tmp_path / "state" / "spool").rglob("*.seg*")
            assert sum(path.stat().st_size for path in segments) <= max_bytes
        assert await asyncio.to_thread(run.metric, "kmsg_forwarder_spool_bytes") <= max_bytes

        async def lost_counted() -> bool:  # counted by the spool's once-a-second housekeeping
            return (
                await asyncio.to_thread(
                    run.metric, "kmsg_forwarder_records_lost_total", reason="spool_full"
                )
                > 0
            )

        await wait_until_async(lost_counted, timeout_s=WAIT_S, interval_s=0.2, what="lost count")
        receiver._script.clear()
        newest = max(e["seq"] for e in _tagged(tmp_path, tag))

        def through_newest() -> bool:
            seqs = [e.get("seq", e.get("last_seq")) for e in receiver.events.values()]
            return any(seq is not None and seq >= newest for seq in seqs)

        await wait_until_async(through_newest, timeout_s=WAIT_S, interval_s=0.2, what="catch-up")
        assert await asyncio.to_thread(run.stop) == 0
    tagged = {e["seq"] for e in _tagged(tmp_path, tag)}
    ours = range(min(tagged), max(tagged) + 1)  # other writers' records may lie between
    gaps = sorted(
        (e for e in receiver.events.values() if _gap_touches(e, ours)),
        key=lambda e: e["first_seq"],
    )
    assert gaps
    assert all(g["reason"] == "spool_full" for g in gaps)
    assert all(g["lost"] == g["last_seq"] - g["first_seq"] + 1 for g in gaps)
    received = {e["seq"] for e in receiver.events.values() if e.get("event") == "kmsg"}
    for gap in gaps:
        assert not received & set(range(gap["first_seq"], gap["last_seq"] + 1))
    # Completeness from the output alone: every tagged seq is delivered or inside a gap.
    covered = set(received)
    for gap in gaps:
        covered |= set(range(gap["first_seq"], gap["last_seq"] + 1))
    assert tagged <= covered


async def test_old_boot_records_arrive_after_a_reboot_with_their_ids_then_the_gap(
    tmp_path: Path, flood_lock: None, start_forwarder: StartForwarder
) -> None:
    """A boot_id swapped between runs: the old boot's spooled records keep ids and times, then the reboot gap."""
    tag = unique_tag()
    boot_file = tmp_path / "boot_id"
    boot_file.write_text("11111111-2222-3333-4444-555555555555\n")
    async with HttpReceiver(path="/in") as receiver:
        receiver.script(*[DOWN] * 1_000_000)
        config = _config(tmp_path, receiver)
        config["source"] = {"boot_id_path": boot_file}
        first = await asyncio.to_thread(start_forwarder, "first", config)
        inject(_messages(tag, 0, 300))
        await _file_has(tmp_path, tag, 300)
        assert await asyncio.to_thread(first.stop) == 0
        old_file = {e["id"]: e for e in _tagged(tmp_path, tag)}
        boot_file.write_text("99999999-8888-7777-6666-555555555555\n")
        receiver._script.clear()
        second = await asyncio.to_thread(start_forwarder, "second", config)

        def old_arrived() -> bool:
            return len(receiver.events_containing(tag)) >= 300 and any(
                e.get("reason") == "reboot" for e in receiver.events.values()
            )

        await wait_until_async(old_arrived, timeout_s=WAIT_S, interval_s=0.2, what="old boot")
        assert await asyncio.to_thread(second.stop) == 0
    old_boot = "11111111-2222-3333-4444-555555555555"
    web_old = [e for e in receiver.events_containing(tag) if e["boot_id"] == old_boot]
    assert len(web_old) == 300
    for event in web_old:
        assert event["id"] in old_file
        assert event["@timestamp"] == old_file[event["id"]]["@timestamp"]
    [reboot] = [e for e in receiver.events.values() if e.get("reason") == "reboot"]
    assert reboot["boot_id"] == old_boot
    assert reboot["last_seq"] is None
    assert reboot["first_seq"] > max(e["seq"] for e in web_old)
