"""Process behaviour operators rely on: signals, readiness while a sink is down, no orphans."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ForwarderFactory
from tests.support.forwarder import free_port, read_ndjson, records_with_tag
from tests.support.kernel import inject, newest_seq, records_after, requires_kernel, unique_tag
from tests.support.wait import wait_until

pytestmark = [requires_kernel, pytest.mark.timeout(120)]  # real forwarder processes


def _capture_pid(forwarder_pid: int) -> int:
    children = Path(f"/proc/{forwarder_pid}/task/{forwarder_pid}/children").read_text().split()
    for child in children:
        if "capture_process" in Path(f"/proc/{child}/cmdline").read_text():
            return int(child)
    raise AssertionError(f"no capture process under {forwarder_pid}: {children}")


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_capture_process_dies_with_a_killed_forwarder(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any]
) -> None:
    """SIGKILL of the forwarder alone (not its group) also ends its capture process."""
    forwarder = forwarder_factory(file_sink_config).start()
    forwarder.wait_serving()
    capture = _capture_pid(forwarder.pid)
    os.kill(forwarder.pid, signal.SIGKILL)
    assert forwarder.process is not None
    forwarder.process.wait(timeout=10)
    wait_until(lambda: _gone(capture), timeout_s=10)


def _down_sink_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "shutdown_timeout_s": 120,
        "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 200},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "source": {"start_at": "newest"},
        "sinks": {"web": {"type": "http", "endpoint": f"http://127.0.0.1:{free_port()}/ingest"}},
    }


def test_down_sink_makes_readyz_fail_while_healthz_stays_ok(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """A sink nobody listens for turns /readyz 503 naming it; /healthz stays 200 (no restart)."""
    forwarder = forwarder_factory(_down_sink_config(tmp_path)).start()
    forwarder.wait_serving()
    inject([f"{unique_tag()} needs delivery"])
    wait_until(lambda: forwarder.http_get("/readyz")[0] == 503)
    status, body = forwarder.http_get("/readyz")
    assert status == 503
    assert "web" in orjson.loads(body)["failing_sinks"]
    assert forwarder.http_get("/healthz")[0] == 200
    wait_until(lambda: forwarder.metric("kmsg_forwarder_sink_retries_total", sink="web") >= 2)
    assert forwarder.metric("kmsg_forwarder_sink_up", sink="web") == 0
    assert forwarder.stop(signal.SIGKILL) == -signal.SIGKILL


def test_second_signal_exits_at_once_while_the_first_is_draining(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """SIGTERM starts a drain that waits for a down sink; a second SIGTERM exits immediately."""
    forwarder = forwarder_factory(_down_sink_config(tmp_path)).start()
    forwarder.wait_serving()
    inject([f"{unique_tag()} pending"])
    wait_until(lambda: forwarder.metric("kmsg_forwarder_sink_retries_total", sink="web") >= 1)
    assert forwarder.process is not None
    forwarder.process.send_signal(signal.SIGTERM)
    wait_until(
        lambda: "stopping" in [line.get("event") for line in forwarder.stderr_lines()],
        what="the first SIGTERM to start the drain",
    )
    retries = forwarder.metric("kmsg_forwarder_sink_retries_total", sink="web")
    wait_until(
        lambda: forwarder.metric("kmsg_forwarder_sink_retries_total", sink="web") > retries,
        what="the draining forwarder to go on retrying the down sink",
    )
    forwarder.process.send_signal(signal.SIGTERM)
    assert forwarder.process.wait(timeout=10) == 128 + signal.SIGTERM


def test_sigint_drains_and_saves_like_sigterm(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any]
) -> None:
    """Ctrl-C (SIGINT) drains what is buffered, saves the checkpoint and exits 0."""
    forwarder = forwarder_factory(file_sink_config).start()
    forwarder.wait_serving()
    tag = unique_tag()
    inject([f"{tag} last words"])
    out = Path(file_sink_config["sinks"]["out"]["path"])
    wait_until(lambda: records_with_tag(read_ndjson(out), tag))
    assert forwarder.stop(signal.SIGINT) == 0
    (record,) = records_with_tag(read_ndjson(out), tag)
    saved = orjson.loads(
        (Path(file_sink_config["state_dir"]) / "checkpoints/out.json").read_bytes()
    )
    assert saved["seq"] >= record["seq"]


def test_sigterm_with_a_down_sink_and_a_full_queue_exits_after_the_shutdown_timeout(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """A drain that cannot finish (sink down, reader blocked) gives up after shutdown_timeout_s."""
    config = _down_sink_config(tmp_path)
    config["shutdown_timeout_s"] = 2
    config["batch"] = {"max_records": 1, "max_in_flight": 1}
    forwarder = forwarder_factory(config).start()
    forwarder.wait_serving()
    tag = unique_tag()
    for index in range(120):  # one read each: more chunks than a sink's queue holds
        inject([f"{tag} {index}"])
        time.sleep(0.002)
    wait_until(lambda: forwarder.metric("kmsg_forwarder_sink_retries_total", sink="web") >= 1)
    assert forwarder.stop(signal.SIGTERM, timeout_s=60) == 0
    events = [line.get("event") for line in forwarder.stderr_lines()]
    assert "shutdown_timeout" in events
    assert events[-1] == "stopped"


def test_sigterm_delivers_what_the_capture_process_had_already_read(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any]
) -> None:
    """Records read by capture but not yet forwarded at SIGTERM are delivered, not dropped."""
    forwarder = forwarder_factory(file_sink_config).start()
    forwarder.wait_serving()
    capture = _capture_pid(forwarder.pid)
    tag = unique_tag()
    caught_up_to = newest_seq()
    wait_until(
        lambda: forwarder.metric("kmsg_forwarder_last_seq_read") >= caught_up_to,
        what="the forwarder to have read the ring up to now",
    )
    os.kill(forwarder.pid, signal.SIGSTOP)  # the forwarder only: capture keeps reading
    try:
        before = _bytes_read(capture)
        after_seq = newest_seq()
        inject(f"{tag} n={index}" for index in range(300))
        # Capture reads in seq order, one record per read(): it has read our last record
        # once its rchar grew by the size of every record from after_seq to that one.
        newer = records_after(after_seq)
        last = max(i for i, (_, raw) in enumerate(newer) if f"{tag} n=299".encode() in raw)
        needed = sum(len(raw) for _, raw in newer[: last + 1])
        wait_until(
            lambda: _bytes_read(capture) - before >= needed,
            what="the capture process to read all 300 records",
        )
        os.kill(forwarder.pid, signal.SIGTERM)
    finally:
        os.kill(forwarder.pid, signal.SIGCONT)
    assert forwarder.process is not None
    assert forwarder.process.wait(timeout=30) == 0
    out = Path(file_sink_config["sinks"]["out"]["path"])
    numbers = {int(r["message"].rsplit("=", 1)[1]) for r in records_with_tag(read_ndjson(out), tag)}
    assert numbers == set(range(300))


def test_capture_process_death_stops_the_forwarder_with_an_error(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any]
) -> None:
    """If the capture process dies, the forwarder exits 1 saying so (never exit 0 as 'done')."""
    forwarder = forwarder_factory(file_sink_config).start()
    forwarder.wait_serving()
    os.kill(_capture_pid(forwarder.pid), signal.SIGKILL)
    assert forwarder.process is not None
    assert forwarder.process.wait(timeout=30) == 1
    assert "capture process ended unexpectedly" in forwarder.stderr_path.read_text()


def _bytes_read(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no rchar in /proc/{pid}/io")
