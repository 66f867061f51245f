"""The server in process over a followed dump and a fake sink: drain, forced exit, shutdown bound."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from forwarder.config import Config, parse_config
from forwarder.delivery.checkpoint import CheckpointStore
from forwarder.server import Server
from forwarder.sinks.outcome import Outcome
from forwarder.source.parser import Record, render_record
from forwarder.telemetry.metrics import Metrics
from tests.support.fakes import FakeSink
from tests.support.wait import wait_until_async

RECORDS = 300
BOOT_ID = "0f0f0f0f-0000-4000-8000-000000000002"


def make_config(tmp_path: Path, *, follow: bool = True, **options: object) -> Config:
    """A dump of RECORDS records (seq 1..RECORDS), followed by default (it never ends)."""
    dump = tmp_path / "kmsg.dump"
    dump.write_bytes(
        b"".join(
            render_record(Record(1, 6, seq, seq * 1000, "-", f"message {seq}"))
            for seq in range(1, RECORDS + 1)
        )
    )
    boot_id = tmp_path / "boot_id"
    boot_id.write_text(BOOT_ID + "\n")
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "retry": {"initial_backoff_ms": 1, "max_backoff_ms": 5},
            "batch": {"max_records": 50, "linger_ms": 10},
            "source": {"path": str(dump), "boot_id_path": str(boot_id), "follow": follow},
            **options,
        }
    )


def start(config: Config, sink: FakeSink) -> tuple[Server, Metrics, asyncio.Task[int]]:
    """Prepare a server with ``sink`` as its only sink and serve it in a task."""
    metrics = Metrics()
    server = Server(config, {sink.name: sink}, metrics=metrics)
    server.prepare()
    return server, metrics, asyncio.create_task(server.serve())


def checkpoint_seq(config: Config, sink: FakeSink) -> int | None:
    """The seq the sink's saved checkpoint stands at, None without one."""
    saved = CheckpointStore(config.state_dir).load(sink.name)
    return None if saved is None else saved.seq


def gone(pid: int | None) -> bool:
    """True once no process has ``pid`` (the server reaps the capture process it ends)."""
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def all_read(metrics: Metrics) -> bool:
    """True once the reader has read the dump's last record."""
    return metrics.registry.get_sample_value("kmsg_forwarder_last_seq_read") == RECORDS


async def test_first_signal_drains_what_was_read_to_the_sink_and_checkpoints_it(tmp_path):
    """SIGTERM while the sink holds every send: once it answers, all records arrive once, checkpointed, exit 0."""
    config = make_config(tmp_path)
    sink = FakeSink()
    sink.gate.clear()
    server, metrics, serving = start(config, sink)
    await wait_until_async(lambda: all_read(metrics), what="the reader to read the whole dump")
    await wait_until_async(lambda: sink.sent, what="a first send to wait on the closed gate")
    with capture_logs() as logs:
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_until_async(
            lambda: any(entry["event"] == "stopping" for entry in logs),
            what="the signal to start the drain",
        )
        sink.gate.set()
        assert await asyncio.wait_for(serving, timeout=30) == 0
    assert sorted(sink.stored_seqs()) == list(range(1, RECORDS + 1))
    assert checkpoint_seq(config, sink) == RECORDS
    assert "shutdown_timeout" not in [entry["event"] for entry in logs]
    assert gone(server.capture_pid)
    assert sink.closed


async def test_second_signal_cuts_the_drain_short_and_still_cleans_up(tmp_path):
    """A second SIGTERM during a drain that waits on a silent sink exits 128+15, capture ended, sink closed."""
    config = make_config(tmp_path, shutdown_timeout_s=300)
    sink = FakeSink()
    sink.gate.clear()
    server, _metrics, serving = start(config, sink)
    capture_pid = server.capture_pid
    await wait_until_async(lambda: sink.sent, what="a first send to wait on the closed gate")
    with capture_logs() as logs:
        os.kill(os.getpid(), signal.SIGTERM)
        await wait_until_async(
            lambda: any(entry["event"] == "stopping" for entry in logs),
            what="the first signal to start the drain",
        )
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(serving, timeout=20) == 128 + signal.SIGTERM
    assert "second_signal_exit_now" in [entry["event"] for entry in logs]
    assert gone(capture_pid)
    assert sink.closed
    assert sink.stored == []
    # Only where the sink began (a new sink saves its start, README "Spool"): nothing delivered.
    assert checkpoint_seq(config, sink) == 0


async def test_shutdown_timeout_bounds_a_sink_that_never_answers(tmp_path):
    """With a sink that never answers, the drain gives up after shutdown_timeout_s: exit 0, nothing delivered."""
    config = make_config(tmp_path, shutdown_timeout_s=0.5)
    sink = FakeSink()
    sink.gate.clear()
    server, _metrics, serving = start(config, sink)
    await wait_until_async(lambda: sink.sent, what="a first send to wait on the closed gate")
    with capture_logs() as logs:
        server.handle_exit(signal.SIGTERM)
        assert await asyncio.wait_for(serving, timeout=20) == 0
    assert "shutdown_timeout" in [entry["event"] for entry in logs]
    assert gone(server.capture_pid)
    assert sink.closed
    assert checkpoint_seq(config, sink) == 0  # its start position only: nothing delivered


async def test_scripted_failures_are_retried_and_every_record_arrives_once(tmp_path):
    """A sink answering 'unavailable' twice and raising once is retried; each record is stored exactly once."""
    config = make_config(tmp_path)
    sink = FakeSink(
        answers=[
            Outcome.unavailable("503 busy"),
            ConnectionResetError("reset"),
            Outcome.unavailable(""),
        ]
    )
    server, metrics, serving = start(config, sink)
    await wait_until_async(
        lambda: checkpoint_seq(config, sink) == RECORDS, what="every record to be checkpointed"
    )
    server.handle_exit(signal.SIGTERM)
    assert await asyncio.wait_for(serving, timeout=30) == 0
    # Two batches are in flight at once: a retried one may land after the next one.
    assert sorted(sink.stored_seqs()) == list(range(1, RECORDS + 1))
    retries = metrics.registry.get_sample_value(
        "kmsg_forwarder_sink_retries_total", {"sink": "fake"}
    )
    assert retries == 3


async def test_a_dump_read_to_its_end_is_delivered_and_the_server_stops_by_itself(tmp_path):
    """Without follow, the end of the dump ends the run: everything delivered and checkpointed, exit 0."""
    config = make_config(tmp_path, follow=False)
    sink = FakeSink()
    server, _metrics, serving = start(config, sink)
    assert await asyncio.wait_for(serving, timeout=30) == 0
    assert server.source_ended
    assert sink.stored_seqs() == list(range(1, RECORDS + 1))
    assert checkpoint_seq(config, sink) == RECORDS
    assert gone(server.capture_pid)


@pytest.mark.parametrize("listen", [False, True], ids=["no listener", "listener"])
def test_metrics_exist_only_with_a_listener(tmp_path, listen):
    """Without [metrics] listen the server has no metrics (nothing could read them); with one it has."""
    options = {"metrics": {"listen": "127.0.0.1:9"}} if listen else {}
    server = Server(make_config(tmp_path, **options), {"fake": FakeSink()})
    assert (server.metrics is not None) is listen
