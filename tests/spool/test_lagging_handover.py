"""In process: a failing sink detached to the spool and attached again gets every record once, in order.

The server follows a dump that grows step by step; a healthy sink and a failing one read
it, and kernel reports (segfaults) among the records make kernel events while the failing
sink is detached. Every step waits for a positive signal, so the hand-over between the
spool feed and the live feed is exercised the same way on every run.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from forwarder.config import Config, parse_config
from forwarder.delivery.checkpoint import CheckpointStore
from forwarder.server import Server
from forwarder.sinks.outcome import Outcome
from tests.support.fakes import FakeSink
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.timeout(120)
BOOT_ID = "0f0f0f0f-0000-4000-8000-00000000a11e"
STEP = 150  # records per step: more than the failing sink's lag threshold (4 batches of 10)
STEPS = 6


def _step(first: int) -> bytes:
    """STEP records from seq ``first``; a segfault report (two records) closes each step."""
    lines = [
        f"6,{seq},{seq * 1000},-;handover record {seq}\n" for seq in range(first, first + STEP - 2)
    ]
    seq = first + STEP - 2
    lines.append(
        f"6,{seq},{seq * 1000},-;memhog[4242]: segfault at 0 ip 000055d0c3a1b1c4 sp "
        "00007ffd4c1e5e30 error 6 in memhog[55d0c3a1b000+1000] likely on CPU 1 (core 1, socket 0)\n"
    )
    lines.append(
        f"6,{seq + 1},{(seq + 1) * 1000},-;Code: 00 00 00 48 89 e5 c7 00 2a <c7> 00 5d c3\n"
    )
    return "".join(lines).encode()


def _config(tmp_path: Path, **options: object) -> Config:
    dump = tmp_path / "kmsg.dump"
    dump.write_bytes(_step(0))
    boot_id = tmp_path / "boot_id"
    boot_id.write_text(BOOT_ID + "\n")
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "retry": {"initial_backoff_ms": 5, "max_backoff_ms": 20},
            "batch": {"max_records": 10, "linger_ms": 5},
            "source": {"path": str(dump), "boot_id_path": str(boot_id), "follow": True},
            **options,
        }
    )


def _stored(sink: FakeSink) -> list[dict[str, object]]:
    return [orjson.loads(event.json) for batch in sink.stored for event in batch.events]


def _kmsg_seqs(sink: FakeSink) -> list[int]:
    return [int(str(e["seq"])) for e in _stored(sink) if e["event"] == "kmsg"]


def _kernel_events(sink: FakeSink) -> list[object]:
    return [e["id"] for e in _stored(sink) if e["event"] == "kernel_event"]


class LinesOnlySink(FakeSink):
    """A fake sink that reads batches as lines (it is given kernel events merged into chunks)."""

    reads_lines_only = True


@pytest.mark.parametrize("sink_type", [FakeSink, LinesOnlySink], ids=["columns", "lines"])
async def test_a_failing_sink_detached_and_attached_again_gets_each_record_once_in_order(
    tmp_path: Path, sink_type: type[FakeSink]
) -> None:
    """Kernel events made while a sink lags wait for its spool cursor: no second cursor, no skipped record."""
    config = _config(tmp_path)
    web = sink_type("web", answers=[Outcome.unavailable("503 down")] * 1_000_000)
    out = sink_type("out")
    server = Server(config, {"web": web, "out": out})
    server.prepare()
    serving = asyncio.create_task(server.serve())
    dump = config.source.path
    try:
        with capture_logs() as logs:
            await wait_until_async(lambda: len(_kmsg_seqs(out)) == STEP, what="the first step")
            for step in range(1, STEPS):
                with dump.open("ab") as grow:
                    grow.write(_step(step * STEP))
                await wait_until_async(
                    lambda step=step: (
                        len(_kmsg_seqs(out)) == (step + 1) * STEP
                        and len(_kernel_events(out)) == step + 1
                    ),
                    timeout_s=30,
                    what=f"step {step} in the healthy sink",
                )
            assert "sink_lagging" in [entry["event"] for entry in logs]
            web.answers.clear()  # the receiver is back
            last = STEPS * STEP - 1

            def web_checkpointed() -> bool:
                saved = CheckpointStore(config.state_dir).load("web")
                return saved is not None and saved.seq == last

            await wait_until_async(web_checkpointed, timeout_s=30, what="web caught up")
            await wait_until_async(
                lambda: "sink_caught_up" in [entry["event"] for entry in logs],
                what="web attached again",
            )
    finally:
        server.handle_exit(signal.SIGTERM)
        code = await asyncio.wait_for(serving, timeout=30)
    assert code == 0
    assert _kmsg_seqs(out) == list(range(STEPS * STEP))
    # Two batches may be in flight: a retried one can land after the next (sorted, then).
    assert sorted(_kmsg_seqs(web)) == list(range(STEPS * STEP))
    assert sorted(_kernel_events(web)) == sorted(_kernel_events(out))
    assert len(_kernel_events(out)) == STEPS
    assert [e for e in _stored(web) if e["event"] == "gap"] == []


async def test_a_sink_that_fails_after_its_queue_filled_never_holds_the_others_back(
    tmp_path: Path,
) -> None:
    """The reader waiting on a full queue notices the sink failing: it detaches it and reads on."""
    config = _config(tmp_path)
    steps = 300  # 45,000 records: more 64 KiB windows than a sink's queue holds
    with config.source.path.open("ab") as grow:
        grow.write(b"".join(_step(step * STEP) for step in range(1, steps)))
    total = steps * STEP
    # Silent at first (the queue fills while no send has failed yet), then failing for good.
    web = FakeSink("web", answers=[Outcome.unavailable("503 down")] * 1_000_000)
    web.gate.clear()
    out = FakeSink("out")
    server = Server(config, {"web": web, "out": out})
    server.prepare()
    serving = asyncio.create_task(server.serve())
    try:
        worker = server._workers["web"]
        await wait_until_async(worker.batcher.queue.full, timeout_s=30, what="web's queue full")
        web.gate.set()  # the receiver answers now: 503
        await wait_until_async(
            lambda: _count(out) >= total + steps, timeout_s=60, what="every record in the file"
        )
        web.answers.clear()
        await wait_until_async(
            lambda: _count(web) >= total + steps, timeout_s=60, what="every record in web"
        )
    finally:
        server.handle_exit(signal.SIGTERM)
        code = await asyncio.wait_for(serving, timeout=30)
    assert code == 0
    assert _kmsg_seqs(out) == list(range(total))
    assert sorted(_kmsg_seqs(web)) == list(range(total))


def _count(sink: FakeSink) -> int:
    """Events stored (records and kernel events), without decoding them."""
    return sum(len(batch) for batch in sink.stored)


async def test_a_drain_gives_a_lagging_sink_the_kernel_events_held_for_it(tmp_path: Path) -> None:
    """Stopped while a sink lags: once it answers again, its records and held kernel events arrive."""
    config = _config(tmp_path, shutdown_timeout_s=60)
    web = FakeSink("web", answers=[Outcome.unavailable("503 down")] * 1_000_000)
    out = FakeSink("out")
    server = Server(config, {"web": web, "out": out})
    server.prepare()
    serving = asyncio.create_task(server.serve())
    try:
        with capture_logs() as logs:
            for step in range(1, STEPS):
                with config.source.path.open("ab") as grow:
                    grow.write(_step(step * STEP))
                await wait_until_async(
                    lambda step=step: len(_kernel_events(out)) == step + 1,
                    timeout_s=30,
                    what=f"step {step}'s kernel event in the healthy sink",
                )
            assert "sink_lagging" in [entry["event"] for entry in logs]
            server.handle_exit(signal.SIGTERM)  # the drain begins while web lags
            await wait_until_async(
                lambda: any(entry["event"] == "stopping" for entry in logs), what="the drain"
            )
            web.answers.clear()
        code = await asyncio.wait_for(serving, timeout=60)
    finally:
        server.handle_exit(signal.SIGTERM)
    assert code == 0
    assert sorted(_kmsg_seqs(web)) == list(range(STEPS * STEP))
    assert sorted(_kernel_events(web)) == sorted(_kernel_events(out))
