"""End to end: a kernel log dump through ``kmsg-forwarder run`` to OTLP receivers.

The forwarder reads a dump file (no kernel needed) until its end and exits; the receivers
run in the test's loop. Rotel shows that what the real CLI sends is OTLP a collector takes
and passes on; the strict receiver drives the failure answers through the real worker
(retry, Retry-After, splitting on 400, dead-letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.source.parser import Record, render_record
from tests.receivers.base import Reply
from tests.receivers.otlp import OtlpReceiver
from tests.support.forwarder import ForwarderProcess, free_port, read_ndjson, render_toml
from tests.support.rotel import RotelAgent
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.timeout(120)
RUN_TIMEOUT_S = 60


def dump(path: Path, messages: list[str], *, skip_after: int | None = None) -> Path:
    """A dump of one record per message; seqs jump by 10 after ``skip_after`` (a gap)."""
    records = []
    for index, message in enumerate(messages):
        seq = 1 + index + (10 if skip_after is not None and index > skip_after else 0)
        records.append(render_record(Record(0, index % 8, seq, 1_000_000 + index, "-", message)))
    path.write_bytes(b"".join(records))
    return path


async def run_forwarder(tmp_path: Path, source: Path, sink: dict[str, Any]) -> tuple[int, str]:
    """Run ``kmsg-forwarder run`` over ``source`` to its end; (exit code, stderr)."""
    config = {
        "host": "e2e-node",
        "state_dir": str(tmp_path / "state"),
        "source": {"path": str(source)},
        "batch": {"max_records": 8, "linger_ms": 20},
        "retry": {"initial_backoff_ms": 20, "max_backoff_ms": 200},
        "sinks": {"otlp": sink},
    }
    path = tmp_path / "forwarder.toml"
    path.write_text(render_toml(config), encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "forwarder", "run", "--config", str(path), "--log-format", "json",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_a_dump_reaches_a_real_collector_with_its_gap(encoding: str, tmp_path: Path):
    """Every record of the dump, and the gap in it, pass through Rotel with their seqs."""
    messages = [f"dump record {i} ✓" for i in range(30)]
    source = dump(tmp_path / "kmsg.dump", messages, skip_after=14)
    async with OtlpReceiver(canonical=False) as downstream:
        rotel = RotelAgent(tmp_path, downstream.url)
        try:
            await asyncio.to_thread(rotel.start)
            sink = {"type": "otlp", "endpoint": rotel.url, "encoding": encoding}
            code, stderr = await run_forwarder(tmp_path, source, sink)
            assert code == 0, stderr[-3000:]
            await wait_until_async(
                lambda: len(downstream.stored) == len(messages) + 1,
                timeout_s=30,
                what="every record and the gap to come out of Rotel",
            )
        finally:
            await asyncio.to_thread(rotel.stop)
    # Two batches are in flight at once: they may reach the receiver in either order.
    records = sorted(
        (log for log in downstream.arrivals if not log.record.event_name),
        key=lambda log: log.attributes["kmsg.seq"],
    )
    assert [log.body for log in records] == messages
    assert [log.attributes["kmsg.seq"] for log in records] == [
        *range(1, 16), *range(26, 41)
    ]  # fmt: skip
    (gap,) = [log for log in downstream.arrivals if log.record.event_name == "kmsg.gap"]
    assert gap.attributes["kmsg.gap.first_seq"] == 16
    assert gap.attributes["kmsg.gap.last_seq"] == 25
    assert gap.attributes["kmsg.gap.lost"] == 10
    assert {log.resource["host.name"] for log in downstream.arrivals} == {"e2e-node"}


async def test_retries_then_a_400_splits_until_only_the_refused_records_are_dead(tmp_path: Path):
    """503 and 429 are retried; a 400 splits its batch, so only the refused records are dead-lettered."""
    messages = [f"record {i}" + (" poison" if i in {5, 19} else "") for i in range(24)]
    source = dump(tmp_path / "kmsg.dump", messages)
    async with OtlpReceiver() as receiver:
        receiver.script(Reply(503, "busy", {"Retry-After": "1"}), Reply(429, "slow down"))
        receiver.refuse_bodies_containing.add("poison")
        code, stderr = await run_forwarder(
            tmp_path, source, {"type": "otlp", "endpoint": receiver.url}
        )
        assert code == 0, stderr[-3000:]
        assert receiver.scripted_left == 0
        assert receiver.duplicates == 0
    good = [m for m in messages if "poison" not in m]
    in_seq_order = sorted(receiver.arrivals, key=lambda log: log.attributes["kmsg.seq"])
    assert [log.body for log in in_seq_order] == good
    dead = read_ndjson(tmp_path / "state" / "deadletter" / "otlp.ndjson")
    assert [d["event"]["message"] for d in dead] == ["record 5 poison", "record 19 poison"]
    assert {d["reason"] for d in dead} == {"otlp_400"}
    assert all("invalid record: record" in d["detail"] for d in dead)
    logs = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [e["verdict"] for e in logs if e["event"] == "sink_retry"][:2] == [
        "unavailable", "unavailable"
    ]  # fmt: skip


async def test_a_partial_success_dead_letters_its_batch_and_the_rest_flows(tmp_path: Path):
    """A 200 rejecting some records is not retried: that batch is dead-lettered, the others stored."""
    messages = [f"record {i}" + (" oversize" if i == 3 else "") for i in range(16)]
    source = dump(tmp_path / "kmsg.dump", messages)
    async with OtlpReceiver() as receiver:
        receiver.reject_bodies_containing.add("oversize")
        sink = {"type": "otlp", "endpoint": receiver.url, "encoding": "json"}
        code, stderr = await run_forwarder(tmp_path, source, sink)
        assert code == 0, stderr[-3000:]
        sent = receiver.sent_bodies
    dead = read_ndjson(tmp_path / "state" / "deadletter" / "otlp.ndjson")
    assert "record 3 oversize" in [d["event"]["message"] for d in dead]
    assert {d["reason"] for d in dead} == {"otlp_partial"}
    assert {d["detail"] for d in dead} == {f"1 of {len(dead)} rejected: 1 records over a limit"}
    stored = {log.body for log in receiver.arrivals}
    assert stored | {d["event"]["message"] for d in dead} == set(messages)
    assert set(sent.values()) == {1}  # nothing was sent twice


async def test_413_splits_until_every_batch_fits(tmp_path: Path):
    """A receiver that refuses large bodies gets halves, then every record, none dead-lettered."""
    messages = [f"record {i} " + "p" * 400 for i in range(32)]
    source = dump(tmp_path / "kmsg.dump", messages)
    async with OtlpReceiver(max_body_bytes=4000) as receiver:
        sink = {"type": "otlp", "endpoint": receiver.url, "compression": "none"}
        code, stderr = await run_forwarder(tmp_path, source, sink)
        assert code == 0, stderr[-3000:]
        assert 413 in receiver.statuses
    assert sorted(log.body for log in receiver.arrivals) == sorted(messages)
    assert read_ndjson(tmp_path / "state" / "deadletter" / "otlp.ndjson") == []


async def test_401_keeps_the_data_and_reports_a_configuration_problem(tmp_path: Path):
    """A wrong token is retried and shown on /readyz; nothing is dead-lettered; fixed, all arrive."""
    messages = [f"kept {i}" for i in range(10)]
    source = dump(tmp_path / "kmsg.dump", messages)
    async with OtlpReceiver(authorization="Bearer right") as receiver:
        wrong = {"type": "otlp", "endpoint": receiver.url, "bearer_token": "wrong"}
        config = {
            "host": "e2e-node", "state_dir": str(tmp_path / "state"), "shutdown_timeout_s": 1,
            "source": {"path": str(source)},
            "retry": {"initial_backoff_ms": 20, "max_backoff_ms": 200},
            "metrics": {"listen": f"127.0.0.1:{free_port()}"}, "sinks": {"otlp": wrong},
        }  # fmt: skip
        workdir = tmp_path / "wrong"
        workdir.mkdir()
        process = ForwarderProcess(workdir, config).start()
        try:
            await asyncio.to_thread(process.wait_serving)

            async def not_ready() -> bool:
                status, body = await asyncio.to_thread(process.http_get, "/readyz")
                failing = orjson.loads(body).get("failing_sinks", {}) if status == 503 else {}
                return bool(failing.get("otlp", {}).get("config_problem"))

            await wait_until_async(not_ready, timeout_s=30, what="/readyz to name the problem")
            await asyncio.to_thread(process.stop)
        finally:
            process.cleanup()
        assert receiver.stored == {}
        assert read_ndjson(tmp_path / "state" / "deadletter" / "otlp.ndjson") == []
        right = {"type": "otlp", "endpoint": receiver.url, "bearer_token": "right"}
        code, stderr = await run_forwarder(tmp_path, source, right)
        assert code == 0, stderr[-3000:]
    assert sorted(log.body for log in receiver.arrivals) == sorted(messages)
