"""Positions: a sink that delivered nothing yet keeps where it began, across restarts."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from forwarder.config import Config, parse_config
from forwarder.server import Server
from forwarder.sinks.outcome import Outcome
from tests.support.fakes import FakeSink
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.timeout(120)
BOOT_ID = "0f0f0f0f-0000-4000-8000-0000000005a1"


def _records(first: int, count: int) -> bytes:
    return "".join(
        f"6,{seq},{seq * 1000},-;position record {seq}\n" for seq in range(first, first + count)
    ).encode()


def _config(tmp_path: Path, records: bytes) -> Config:
    dump = tmp_path / "kmsg.dump"
    dump.write_bytes(records)
    boot_id = tmp_path / "boot_id"
    boot_id.write_text(BOOT_ID + "\n")
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "shutdown_timeout_s": 0.5,
            "retry": {"initial_backoff_ms": 5, "max_backoff_ms": 20},
            "batch": {"max_records": 20, "linger_ms": 5},
            "source": {
                "path": str(dump),
                "boot_id_path": str(boot_id),
                "follow": True,
                "start_at": "newest",  # a new sink begins at the first record it is given
            },
        }
    )


def _seqs(sink: FakeSink) -> list[int]:
    events = [orjson.loads(event.json) for batch in sink.stored for event in batch.events]
    return sorted(int(e["seq"]) for e in events if e["event"] == "kmsg")


async def _run_until(server: Server, done: Callable[[], bool]) -> int:
    server.prepare()
    serving = asyncio.create_task(server.serve())
    try:
        await wait_until_async(done, timeout_s=60, what="the run's records")
    finally:
        server.handle_exit(signal.SIGTERM)
    return await asyncio.wait_for(serving, timeout=60)


async def test_a_sink_down_since_its_first_start_resumes_where_it_began_after_a_restart(
    tmp_path: Path,
) -> None:
    """Down from the start, restarted when the source no longer has its first records: the spool does."""
    web = FakeSink("web", answers=[Outcome.unavailable("503 down")] * 1_000_000)
    out = FakeSink("out")
    first = Server(_config(tmp_path, _records(0, 100)), {"web": web, "out": out})
    assert await _run_until(first, lambda: _seqs(out) == list(range(100))) == 0
    assert _seqs(web) == []
    # The source moved on (the ring overwrote 0..99); the receiver is back.
    web_again = FakeSink("web")
    out_again = FakeSink("out")
    second = Server(_config(tmp_path, _records(100, 50)), {"web": web_again, "out": out_again})
    assert await _run_until(second, lambda: _seqs(web_again) == list(range(150))) == 0
    assert _seqs(out_again) == list(range(100, 150))
