"""Run the real ``kmsg-forwarder`` as a subprocess and observe it like an operator would.

The forwarder runs in its own session (process group), so SIGSTOP/SIGCONT/SIGKILL reach
the capture process too, and teardown kills the whole group by its pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.support.wait import wait_until


def toml_value(value: Any) -> str:
    """Render a scalar or list as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    raise TypeError(f"cannot render {value!r} as TOML")


def render_toml(config: Mapping[str, Any], prefix: str = "") -> str:
    """Render nested dicts as TOML tables (enough for our configs)."""
    scalars = [f"{key} = {toml_value(v)}" for key, v in config.items() if not _is_table(v)]
    text = "\n".join(scalars) + ("\n" if scalars else "")
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            text += f"\n[{name}]\n" + render_toml(value, name)
        elif _is_table(value):
            for table in value:
                text += f"\n[[{name}]]\n" + render_toml(table, name)
    return text


def _is_table(value: Any) -> bool:
    """A dict is a table; a non-empty list of dicts is an array of tables."""
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of ``path`` (a line still being written is left out)."""
    if not path.exists():
        return []
    complete = path.read_bytes().rpartition(b"\n")[0]
    return [orjson.loads(line) for line in complete.splitlines() if line.strip()]


class ForwarderProcess:
    """One ``kmsg-forwarder run`` subprocess with a config written from a dict."""

    def __init__(self, workdir: Path, config: Mapping[str, Any]) -> None:
        self.workdir = workdir
        self.config = config
        self.config_path = workdir / "forwarder.toml"
        self.stderr_path = workdir / "forwarder.stderr"
        self.config_path.write_text(render_toml(config), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        """Base URL of the status server."""
        return f"http://{self.config['metrics']['listen']}"

    @property
    def pid(self) -> int:
        """Pid of the running forwarder."""
        assert self.process is not None
        return self.process.pid

    def start(self, *args: str) -> ForwarderProcess:
        """Start ``kmsg-forwarder run`` (stdout to a file, stderr to a log)."""
        with self.stderr_path.open("ab") as stderr, (self.workdir / "stdout").open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "forwarder", "run", "--config", str(self.config_path),
                 "--log-format", "json", *args],
                stdout=out, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    def signal_group(self, signum: int) -> None:
        """Send a signal to the forwarder and its capture process."""
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Signal the forwarder and wait for it to exit; return its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout_s)
        finally:
            self.signal_group(signal.SIGKILL)  # the capture process, whatever happened
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group (no chance to save anything)."""
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def cleanup(self, term_timeout_s: float = 5) -> None:
        """Make sure nothing we started is left running: SIGTERM, a bounded wait, SIGKILL (by pid)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.signal_group(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            with suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=term_timeout_s)
        self.signal_group(signal.SIGKILL)  # the capture process too, whatever happened
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def stderr_lines(self) -> list[dict[str, Any]]:
        """The forwarder's JSON log lines so far."""
        lines = []
        for raw in self.stderr_path.read_bytes().splitlines():
            with suppress(orjson.JSONDecodeError):
                lines.append(orjson.loads(raw))
        return lines

    def http_get(self, path: str) -> tuple[int, bytes]:
        """GET a status-server path; (status, body)."""
        try:
            with urllib.request.urlopen(self.metrics_url + path, timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Scrape /metrics: {(sample name, sorted labels): value}."""
        status, body = self.http_get("/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent)."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_serving(self, timeout_s: float = 20) -> None:
        """Wait until the status server answers /healthz."""

        def serving() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"forwarder exited: {self.stderr_path.read_text()[-2000:]}")
            with suppress(OSError):
                return self.http_get("/healthz")[0] == 200
            return False

        wait_until(serving, timeout_s=timeout_s)


def checkpoint(state_dir: Path, sink: str) -> dict[str, Any] | None:
    """The sink's checkpoint file as a dict, None if absent."""
    path = state_dir / "checkpoints" / f"{sink}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def records_with_tag(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """Kernel-record events whose message contains ``tag``."""
    return [e for e in events if e.get("event") == "kmsg" and tag in e.get("message", "")]


def iter_gaps(events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The gap events among ``events``."""
    return (e for e in events if e.get("event") == "gap")


StartForwarder = Callable[..., ForwarderProcess]
"""The ``start_forwarder`` fixture: ``start(name, config, wait_serving=True)``."""
