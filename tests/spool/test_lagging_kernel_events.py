"""Kernel events of a lagging sink survive a stop that loses what was in memory.

The forwarder stops while one sink lags (its receiver down, the drain cut short: what was
held in memory for it is gone, as after a SIGKILL). At the restart the source no longer
holds the old records (the ring overwrote them): they are only in the spool. The lagging
sink must still get every record *and every kernel event* the healthy sink got, once each,
each event right after the record that completed it. And after a reboot, a report still open
when the old boot ended comes out from the spool before the reboot gap.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import orjson
import pytest

from forwarder.delivery.checkpoint import CheckpointStore
from forwarder.server import Server
from forwarder.sinks.outcome import Outcome
from tests.spool.test_lagging_handover import (
    BOOT_ID,
    STEP,
    _config,
    _kernel_events,
    _kmsg_seqs,
    _step,
)
from tests.support.fakes import FakeSink
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.timeout(120)
STEPS = 6


def _stream(sink: FakeSink) -> list[dict[str, object]]:
    return [orjson.loads(event.json) for batch in sink.stored for event in batch.events]


async def _run_until(server: Server, done: object, what: str) -> int:
    server.prepare()
    serving = asyncio.create_task(server.serve())
    try:
        await wait_until_async(done, timeout_s=60, what=what)  # type: ignore[arg-type]
    finally:
        server.handle_exit(signal.SIGTERM)
        code = await asyncio.wait_for(serving, timeout=60)
    return code


# A segfault line with no "Code:" line after it: its report stays open until the idle flush.
OPEN_REPORT = (
    "6,{seq},{ts},-;memhog[4343]: segfault at 0 ip 000055d0c3a1b1c4 sp 00007ffd4c1e5e30 "
    "error 6 in memhog[55d0c3a1b000+1000] likely on CPU 0 (core 0, socket 0)\n"
)


@pytest.mark.parametrize("ends_open", [False, True], ids=["closed", "open-at-the-end"])
async def test_a_restart_while_lagging_still_gives_every_kernel_event_once(
    tmp_path: Path, ends_open: bool
) -> None:
    """Held events lost at the stop come back from the spool: each once, after its record.

    ``open-at-the-end``: the newest spooled record leaves a report open, closed only by the
    idle flush after the restart: the live path's, and still the lagging sink's.
    """
    config = _config(tmp_path, shutdown_timeout_s=1)  # the drain gives up on the down sink
    dump = config.source.path
    steps = b"".join(_step(step * STEP) for step in range(STEPS))
    total = STEPS * STEP
    last_step = _step((STEPS - 1) * STEP)
    if ends_open:
        tail = OPEN_REPORT.format(seq=total, ts=total * 1000).encode()
        steps, last_step, total = steps + tail, last_step + tail, total + 1
    dump.write_bytes(steps)
    events = STEPS + ends_open
    web = FakeSink("web", answers=[Outcome.unavailable("503 down")] * 1_000_000)
    out = FakeSink("out")
    await _run_until(
        Server(config, {"web": web, "out": out}),
        lambda: len(_kmsg_seqs(out)) == total and len(_kernel_events(out)) == events,
        "every record and event in the healthy sink",
    )
    stopped_at = CheckpointStore(config.state_dir).load("web")
    assert stopped_at is None or stopped_at.seq < STEP, "web delivered nothing before the stop"
    assert _kernel_events(web) == []

    # The ring overwrote everything but the last step: the rest is only in the spool.
    dump.write_bytes(last_step)
    web_again = FakeSink("web")
    out_again = FakeSink("out")
    code = await _run_until(
        Server(config, {"web": web_again, "out": out_again}),
        lambda: (
            (saved := CheckpointStore(config.state_dir).load("web")) is not None
            and saved.seq == total - 1
            and len(_kernel_events(web_again)) == events
        ),
        "web caught up from the spool",
    )
    assert code == 0
    stream = _stream(web_again)
    assert sorted(_kmsg_seqs(web_again)) == list(range(total))
    assert sorted(_kernel_events(web_again)) == sorted(_kernel_events(out))
    assert [e for e in stream if e["event"] == "gap"] == []
    # Each event right after the record that completed it (the segfault's "Code:" line).
    for at, event in enumerate(stream):
        if event["event"] == "kernel_event":
            assert stream[at - 1]["event"] == "kmsg"
            assert stream[at - 1]["seq"] == event["last_seq"]
    assert _kernel_events(out_again) == []  # out had them all before the stop


async def test_a_report_open_when_the_boot_ended_comes_out_after_the_reboot(
    tmp_path: Path,
) -> None:
    """The forwarder went down with the boot while a report was open (an oops before a hang).

    The sink had every record of that boot; after the reboot its catch-up closes the report
    from the spool: the event, then the reboot gap, then the new boot.
    """
    config = _config(tmp_path, kernel_events={"idle_flush_s": 3600})  # no wall-clock flush
    dump = config.source.path
    dump.write_bytes(_step(0) + OPEN_REPORT.format(seq=STEP, ts=STEP * 1000).encode())
    out = FakeSink("out")

    def delivered(boot_id: str, seq: int) -> bool:
        saved = CheckpointStore(config.state_dir).load("out")
        return saved is not None and (saved.boot_id, saved.seq) == (boot_id, seq)

    await _run_until(Server(config, {"out": out}), lambda: delivered(BOOT_ID, STEP), "boot A")
    assert len(_kernel_events(out)) == 1  # the step's own segfault; the last report is open

    new_boot = "0f0f0f0f-0000-4000-8000-0000000000b2"
    config.source.boot_id_path.write_text(new_boot + "\n")
    dump.write_bytes(b"".join(f"6,{seq},{seq},-;new boot {seq}\n".encode() for seq in range(5)))
    after = FakeSink("out")
    await _run_until(Server(config, {"out": after}), lambda: delivered(new_boot, 4), "boot B")
    stream = _stream(after)
    described = [(e["event"], e["boot_id"], e.get("first_seq", e.get("seq"))) for e in stream]
    assert described == [
        ("kernel_event", BOOT_ID, STEP),
        ("gap", BOOT_ID, STEP + 1),
        *[("kmsg", new_boot, seq) for seq in range(5)],
    ]
