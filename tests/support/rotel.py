"""Rotel, a real OpenTelemetry collector (Rust), as a loopback OTLP/HTTP receiver for tests.

The ``rotel`` wheel (pinned in the test extras) ships the ``rotel-agent`` binary inside
the package, so the venv that ``make install`` builds has it. It listens on free
127.0.0.1 ports only (its gRPC receiver cannot be turned off, so it gets one too), accepts
logs alone and re-exports them over OTLP/HTTP to ``export_url``. It answers 200 before it
exports, so what it thought of a record is seen at the receiver behind it. Stopped by pid.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from contextlib import suppress
from pathlib import Path

import rotel

from tests.support.forwarder import free_port
from tests.support.wait import wait_until

AGENT = Path(rotel.__file__).parent / "rotel-agent"


class RotelAgent:
    """One ``rotel-agent start`` process; ``url`` is its OTLP/HTTP endpoint."""

    def __init__(self, workdir: Path, export_url: str) -> None:
        self.workdir = workdir
        self.export_url = export_url
        self.port = free_port()
        self.log_path = workdir / "rotel.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of its OTLP/HTTP receiver."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RotelAgent:
        """Start the agent and wait (bounded) until its HTTP receiver accepts connections."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(AGENT), "start",
                 "--otlp-http-endpoint", f"127.0.0.1:{self.port}",
                 "--otlp-grpc-endpoint", f"127.0.0.1:{free_port()}",
                 "--otlp-receiver-traces-disabled", "--otlp-receiver-metrics-disabled",
                 "--pid-file", str(self.workdir / "rotel.pid"),
                 "--log-file", str(self.workdir / "rotel-agent.log"),
                 "--batch-timeout", "50ms",
                 "--exporter", "otlp", "--otlp-exporter-protocol", "http",
                 "--otlp-exporter-endpoint", self.export_url,
                 "--otlp-exporter-retry-initial-backoff", "100ms"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        wait_until(self._accepting, timeout_s=20, what="rotel-agent to listen")
        return self

    def _accepting(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"rotel-agent exited: {self.log_path.read_text()[-2000:]}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit (bounded); by its pid only."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                with suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=10)
        self.process = None
