"""The forwarder with a spool, on a dump file: a down sink never holds the others back.

A kmsg dump (followed, like ``tail -f``) feeds an HTTP sink that answers 503 and a file
sink. The file sink gets every record while the HTTP sink is down; after a SIGKILL and a
restart the HTTP sink resumes from the spool, and once the receiver is back it has every
record exactly as the file sink has it, with no gap.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.receivers.base import Reply
from tests.receivers.http import HttpReceiver
from tests.support.forwarder import StartForwarder, free_port, iter_gaps, read_ndjson
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.timeout(240)
WAIT_S = 90.0


def _lines(first: int, count: int) -> str:
    return "".join(
        f"6,{seq},{seq * 1000},-;spool test record {seq} " + "q" * 40 + "\n"
        for seq in range(first, first + count)
    )


def _config(tmp_path: Path, receiver: HttpReceiver, dump: Path) -> dict[str, Any]:
    (tmp_path / "boot_id").write_text("dump-boot\n")
    return {
        "host": "node-1",
        "state_dir": tmp_path / "state",
        "shutdown_timeout_s": 2,
        "source": {"path": dump, "boot_id_path": tmp_path / "boot_id", "follow": True},
        "batch": {"max_records": 100, "linger_ms": 20},
        "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 300},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "sinks": {
            "web": {"type": "http", "endpoint": f"{receiver.url}/in"},
            "out": {"type": "file", "path": tmp_path / "out.ndjson"},
        },
    }


async def _file_has(path: Path, count: int) -> None:
    def arrived() -> bool:
        return len({e["seq"] for e in read_ndjson(path) if e.get("event") == "kmsg"}) >= count

    await wait_until_async(arrived, timeout_s=WAIT_S, interval_s=0.2, what=f"{count} in the file")


async def test_down_sink_never_holds_the_file_sink_and_resumes_from_the_spool(
    tmp_path: Path, start_forwarder: StartForwarder
) -> None:
    """20,000 records while HTTP answers 503, SIGKILL, restart: the file never waits; all arrive."""
    dump = tmp_path / "kmsg.dump"
    dump.write_text(_lines(0, 10_000))
    async with HttpReceiver(path="/in") as receiver:
        receiver.script(*[Reply(503, "down")] * 1_000_000)
        config = _config(tmp_path, receiver, dump)
        first = await asyncio.to_thread(start_forwarder, "first", config)
        await _file_has(tmp_path / "out.ndjson", 10_000)
        first.kill()
        with dump.open("a") as more:
            more.write(_lines(10_000, 10_000))
        second = await asyncio.to_thread(start_forwarder, "second", config)
        await _file_has(tmp_path / "out.ndjson", 20_000)
        assert not [e for e in receiver.events.values() if e.get("event") == "kmsg"]
        receiver._script.clear()

        def all_arrived() -> bool:
            return sum(1 for e in receiver.events.values() if e.get("event") == "kmsg") >= 20_000

        await wait_until_async(all_arrived, timeout_s=WAIT_S, interval_s=0.2, what="all 20,000")
        assert await asyncio.to_thread(second.stop) == 0
    web = sorted(
        (e for e in receiver.events.values() if e.get("event") == "kmsg"), key=lambda e: e["seq"]
    )
    assert [e["seq"] for e in web] == list(range(20_000))
    assert [e for e in receiver.events.values() if e.get("event") == "gap"] == []
    out = read_ndjson(tmp_path / "out.ndjson")
    assert list(iter_gaps(out)) == []
    by_id = {e["id"]: e for e in out if e.get("event") == "kmsg"}
    assert all(by_id[e["id"]] == e for e in web)  # byte-identical events on both paths


async def test_a_sink_whose_queue_fills_is_detached_and_attached_again(
    tmp_path: Path, start_forwarder: StartForwarder
) -> None:
    """Many small windows through a FIFO fill the down sink's queue: it lags, then catches up."""
    fifo = tmp_path / "kmsg.fifo"
    os.mkfifo(fifo)
    async with HttpReceiver(path="/in") as receiver:
        receiver.script(*[Reply(503, "down")] * 1_000_000)
        config = _config(tmp_path, receiver, fifo)
        config["source"]["follow"] = False
        run = start_forwarder("run", config, wait_serving=False)
        writer = await asyncio.to_thread(os.open, fifo, os.O_WRONLY)  # the forwarder opens it
        try:

            def lagging() -> bool:
                return "sink_lagging" in {line.get("event") for line in run.stderr_lines()}

            # Small writes until the failing sink has queued enough to be detached (it is
            # detached when records for it arrive while it is failing and backed up).
            written = 0
            while written < 5_000 or not lagging():
                assert written < 50_000, "the failing sink was never detached"
                await asyncio.to_thread(os.write, writer, _lines(written, 5).encode())
                written += 5
            receiver._script.clear()

            def attached() -> bool:
                return "sink_caught_up" in {line.get("event") for line in run.stderr_lines()}

            await wait_until_async(attached, timeout_s=WAIT_S, interval_s=0.2, what="attached")
            await asyncio.to_thread(os.write, writer, _lines(written, 10).encode())
            written += 10
        finally:
            os.close(writer)  # the end of input: the last records are framed

        def all_arrived() -> bool:
            kmsg = [e for e in receiver.events.values() if e.get("event") == "kmsg"]
            return len(kmsg) >= written

        await wait_until_async(all_arrived, timeout_s=WAIT_S, interval_s=0.2, what="all")
        await _file_has(tmp_path / "out.ndjson", written)
        assert run.process is not None
        assert await asyncio.to_thread(run.process.wait, 30) == 0  # input ended, all delivered
    web = sorted(
        (e for e in receiver.events.values() if e.get("event") == "kmsg"), key=lambda e: e["seq"]
    )
    assert [e["seq"] for e in web] == list(range(written))
    assert [e for e in receiver.events.values() if e.get("event") == "gap"] == []


async def test_a_full_spool_disk_shows_on_readyz_and_never_stops_the_forwarder(
    tmp_path: Path, small_fs: Path, start_forwarder: StartForwarder
) -> None:
    """ENOSPC on the spool: /readyz says degraded, sinks still get every record; freed space heals it."""
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))
    dump = tmp_path / "kmsg.dump"
    dump.write_text(_lines(0, 5_000))
    async with HttpReceiver(path="/in") as receiver:
        config = _config(tmp_path, receiver, dump)
        config["spool"] = {"path": small_fs / "spool"}
        run = await asyncio.to_thread(start_forwarder, "run", config)
        await _file_has(tmp_path / "out.ndjson", 5_000)

        def kmsg_received() -> int:
            return sum(1 for e in receiver.events.values() if e.get("event") == "kmsg")

        await wait_until_async(
            lambda: kmsg_received() >= 5_000, timeout_s=WAIT_S, interval_s=0.2, what="web"
        )
        status, body = await asyncio.to_thread(run.http_get, "/readyz")
        assert status == 503
        assert b'"degraded": true' in body or b'"degraded":true' in body

        async def degraded_metric() -> bool:  # the gauges follow about once a second
            return await asyncio.to_thread(run.metric, "kmsg_forwarder_spool_degraded") == 1

        await wait_until_async(degraded_metric, timeout_s=WAIT_S, interval_s=0.2, what="gauge")
        assert await asyncio.to_thread(run.metric, "kmsg_forwarder_spool_write_errors_total") >= 1
        filler.unlink()

        async def ready() -> bool:
            code, _ = await asyncio.to_thread(run.http_get, "/readyz")
            return code == 200

        await wait_until_async(ready, timeout_s=WAIT_S, interval_s=0.5, what="/readyz 200 again")
        assert await asyncio.to_thread(run.stop) == 0
