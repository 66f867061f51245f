"""Shared fixtures (forwarder subprocesses always cleaned up by pid) and test-wide settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.forwarder import ForwarderProcess, StartForwarder, free_port

# How long an example takes is not behaviour: a busy machine is slow, not wrong. No
# per-example deadline and no "too slow" health check, so property tests cannot flake on it.
settings.register_profile("kmsg", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kmsg")

ForwarderFactory = Callable[[Mapping[str, Any]], ForwarderProcess]


@pytest.fixture
def forwarder_factory(tmp_path: Path) -> Iterator[ForwarderFactory]:
    """Create ForwarderProcess objects (in tmp_path) that teardown kills by pid."""
    created: list[ForwarderProcess] = []

    def create(config: Mapping[str, Any]) -> ForwarderProcess:
        workdir = tmp_path / f"forwarder-{len(created)}"
        workdir.mkdir()
        process = ForwarderProcess(workdir, config)
        created.append(process)
        return process

    yield create
    for process in created:
        process.cleanup()


@pytest.fixture
def start_forwarder(tmp_path: Path) -> Iterator[StartForwarder]:
    """Start forwarders in tmp_path/NAME; teardown stops each by pid (SIGTERM, wait, SIGKILL)."""
    started: list[ForwarderProcess] = []

    def start(
        name: str, config: Mapping[str, Any], *, wait_serving: bool = True
    ) -> ForwarderProcess:
        workdir = tmp_path / name
        workdir.mkdir()
        process = ForwarderProcess(workdir, config)
        started.append(process)  # before it runs: a failed start is cleaned up too
        process.start()
        if wait_serving:
            process.wait_serving()
        return process

    yield start
    for process in started:
        process.cleanup()


@pytest.fixture
def file_sink_config(tmp_path: Path) -> dict[str, Any]:
    """A config reading the real /dev/kmsg into an NDJSON file sink, metrics on loopback."""
    return {
        "state_dir": str(tmp_path / "state"),
        "shutdown_timeout_s": 10,
        "batch": {"max_records": 100, "linger_ms": 50},
        "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "sinks": {"out": {"type": "file", "path": str(tmp_path / "out.ndjson")}},
    }
