"""What ``/healthz`` and ``/readyz`` report: capture alive; sinks delivering; spool writable."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from forwarder.config import MetricsConfig
from forwarder.delivery.worker import SinkWorker
from forwarder.reader import Reader
from forwarder.source.capture import Capture
from forwarder.spool.feeds import SpoolFeeds


class Health:
    """The health and readiness reports of a running server."""

    def __init__(
        self,
        config: MetricsConfig,
        capture: Capture,
        reader: Reader,
        workers: Mapping[str, SinkWorker],
        *,
        feeds: SpoolFeeds | None = None,
    ) -> None:
        self._config = config
        self._feeds = feeds
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
        detail: dict[str, Any] = {"failing_sinks": failing}
        spool_ok = True
        if self._feeds is not None:
            spool = self._feeds.spool
            spool_ok = spool.unwritable is None
            detail["spool"] = {
                "degraded": not spool_ok,
                "error": spool.unwritable,
                "lagging_sinks": sorted(self._feeds.catch_ups),
            }
        return not failing and spool_ok, detail
