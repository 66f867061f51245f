"""Each process imports only what its config uses (idle memory: bench/idle_bench.py).

The main process: each case loads a config and builds the server in a fresh interpreter,
as ``run`` does, then lists which heavy modules got imported (and, for the metrics
listener, which ones starting the status server adds). The capture process: its own
command line, with ``-X importtime``, over a small dump.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.config import SourceConfig
from forwarder.source.capture import capture_command
from tests.support.forwarder import free_port, render_toml

HEAVY = (
    "pydantic",  # gone: the config is msgspec (README "Design")
    "aiohttp",
    "aiokafka",
    "cramjam",
    "yarl",
    "prometheus_client",
    "forwarder.sinks.loki.push",
    "forwarder.telemetry.status_server",
    "tenacity",  # only once a send needs a retry (forwarder/delivery/retry.py)
    "ctypes",  # only in the capture process, for its parent-death signal
)

_PROBE = """
import asyncio, sys
import orjson
from forwarder.cli import main
from forwarder.config import load_config
from forwarder.server import Server
from forwarder.telemetry.logs import configure_logging

configure_logging("warning")
server = Server(load_config(__import__("pathlib").Path(sys.argv[1])))
heavy = sys.argv[2].split(",")
built = sorted(name for name in heavy if name in sys.modules)
serving = []
if sys.argv[3] == "serve":
    server.prepare()
    asyncio.run(server.serve())
    serving = sorted(name for name in heavy if name in sys.modules)
print(orjson.dumps([built, serving]).decode())
"""


def _imported(
    config: dict[str, Any], tmp_path: Path, *, serve: bool = False
) -> tuple[set[str], set[str]]:
    """Heavy modules imported once the server is built, and once its status server started."""
    path = tmp_path / "forwarder.toml"
    path.write_text(render_toml({"state_dir": str(tmp_path / "state"), **config}))
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), ",".join(HEAVY), "serve" if serve else ""],
        capture_output=True,
        check=True,
        timeout=20,
    )
    built, serving = orjson.loads(result.stdout)
    return set(built), set(serving)


@pytest.mark.parametrize(
    ("sinks", "expected"),
    [
        ({"out": {"type": "stdout"}}, set()),
        ({"out": {"type": "file", "path": "/dev/null"}}, set()),
        (
            {"k": {"type": "kafka", "bootstrap_servers": ["127.0.0.1:9"], "topic": "kmsg"}},
            {"aiokafka", "cramjam"},
        ),
        ({"web": {"type": "http", "endpoint": "http://127.0.0.1:9/in"}}, {"aiohttp", "yarl"}),
        (
            {"es": {"type": "elasticsearch", "endpoint": "http://127.0.0.1:9"}},
            {"aiohttp", "yarl"},
        ),
        (
            {"loki": {"type": "loki", "endpoint": "http://127.0.0.1:9"}},
            {"aiohttp", "yarl", "cramjam", "forwarder.sinks.loki.push"},
        ),
        ({"otel": {"type": "otlp", "endpoint": "http://127.0.0.1:9"}}, {"aiohttp", "yarl"}),
    ],
    ids=["stdout", "file", "kafka", "http", "elasticsearch", "loki", "otlp"],
)
def test_only_the_configured_sinks_libraries_are_imported(
    sinks: dict[str, Any], expected: set[str], tmp_path: Path
) -> None:
    """Building the server imports a sink's client library only when that sink is configured."""
    assert _imported({"sinks": sinks}, tmp_path)[0] == expected


def test_the_default_config_loads_no_metrics_library(tmp_path: Path) -> None:
    """Without [metrics] listen neither prometheus_client nor aiohttp is imported, nor pydantic."""
    built, _ = _imported({}, tmp_path)
    assert built == set()


def test_a_metrics_listener_loads_prometheus_client_then_aiohttp_when_serving(
    tmp_path: Path,
) -> None:
    """A listener loads prometheus_client with the server; aiohttp only when the status server starts."""
    dump, boot_id = tmp_path / "kmsg.dump", tmp_path / "boot_id"
    dump.write_bytes(b"6,1,100,-;one record\n")
    boot_id.write_text("0f0f0f0f-0000-4000-8000-000000000003\n")
    config = {
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "source": {"path": str(dump), "boot_id_path": str(boot_id)},
        "sinks": {"out": {"type": "file", "path": str(tmp_path / "out.ndjson")}},
    }
    built, serving = _imported(config, tmp_path, serve=True)
    assert built == {"prometheus_client"}
    assert serving == {"prometheus_client", "aiohttp", "yarl", "forwarder.telemetry.status_server"}


def test_the_command_line_parser_does_not_import_shutil() -> None:
    """The help formatter gets its width from os: shutil, bz2 and lzma stay unloaded."""
    probe = (
        "import sys; from forwarder.cli import _parser; _parser().format_help(); "
        "print(sorted(m for m in ('shutil', 'bz2', 'lzma') if m in sys.modules))"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE")}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, check=True, timeout=20, env=environment
    )
    assert result.stdout.decode().strip() == "[]"


def test_the_capture_process_imports_only_the_standard_library_it_uses(tmp_path: Path) -> None:
    """The capture process loads neither the forwarder package nor typing, argparse, re or asyncio."""
    dump = tmp_path / "kmsg.dump"
    dump.write_bytes(b"6,1,100,-;one record\n")
    fd = os.open(dump, os.O_RDONLY)
    try:
        command = capture_command(SourceConfig(path=dump), fd, is_device=False)
        assert command[1:3] == ["-I", "-S"]  # no site: its hooks are not the process's own
        command[1:1] = ["-X", "importtime"]
        result = subprocess.run(
            command, capture_output=True, check=True, timeout=20, pass_fds=(fd,)
        )
    finally:
        os.close(fd)
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.decode().splitlines()
        if line.startswith("import time:") and not line.endswith("| imported package")
    }
    assert "ctypes" in imported  # the probe saw the module's own imports
    assert imported.isdisjoint({"forwarder", "typing", "argparse", "re", "asyncio", "contextlib"})
