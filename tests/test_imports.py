"""A process imports only the client libraries its config uses (idle memory: bench/idle_bench.py).

Each case loads a config and builds the pipeline in a fresh interpreter, as ``run`` does,
then lists which heavy modules got imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.forwarder import render_toml

HEAVY = ("aiohttp", "aiokafka", "cramjam", "yarl", "forwarder.sinks.loki.push")

_PROBE = """
import sys
import orjson
from forwarder.cli import main
from forwarder.config import load_config
from forwarder.pipeline import Pipeline

Pipeline(load_config(__import__("pathlib").Path(sys.argv[1])))
heavy = sys.argv[2].split(",")
print(orjson.dumps(sorted(name for name in heavy if name in sys.modules)).decode())
"""


def _imported_after_building(config: dict[str, Any], tmp_path: Path) -> set[str]:
    path = tmp_path / "forwarder.toml"
    path.write_text(render_toml({"state_dir": str(tmp_path / "state"), **config}))
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), ",".join(HEAVY)],
        capture_output=True,
        check=True,
        timeout=20,
    )
    return set(orjson.loads(result.stdout))


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
    """Building the pipeline imports a sink's client library only when that sink is configured."""
    assert _imported_after_building({"sinks": sinks}, tmp_path) == expected


def test_a_metrics_listener_alone_does_not_import_aiohttp_before_the_server_starts(
    tmp_path: Path,
) -> None:
    """The status server's aiohttp loads when it starts (in run), not while the config is built."""
    config = {"metrics": {"listen": "127.0.0.1:9"}, "sinks": {"out": {"type": "stdout"}}}
    assert _imported_after_building(config, tmp_path) == set()
