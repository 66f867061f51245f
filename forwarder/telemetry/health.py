"""What ``/healthz`` and ``/readyz`` report: capture alive; every sink delivering."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from forwarder.config import MetricsConfig
from forwarder.delivery.worker import SinkWorker
from forwarder.reader import Reader
from forwarder.source.capture import Capture


class Health:
    """The health and readiness reports of a running server."""

    def __init__(
        self,
        config: MetricsConfig,
        capture: Capture,
        reader: Reader,
        workers: Mapping[str, SinkWorker],
    ) -> None:
        self._config = config
        self._capture = capture
        self._reader = reader
        self._workers = workers

    def health(self) -> tuple[bool, Mapping[str, Any]]:
        """Alive while capture runs (or the dump it read has ended)."""
        running = self._capture.running or self._reader.source_ended
        return running, {"capture_running": running}

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        """Ready when no sink has been failing for longer than allowed."""
        now = time.monotonic()
        grace = self._config.ready_after_failing_s
        failing = {
            name: {
                "error": worker.health.last_error,
                "config_problem": worker.health.config_problem,
                "failing_for_s": round(now - worker.health.failing_since, 3),
            }
            for name, worker in self._workers.items()
            if worker.health.failing_since is not None
            and (worker.health.config_problem or now - worker.health.failing_since >= grace)
        }
        return not failing, {"failing_sinks": failing}
