"""The HTTP endpoints for operators: ``/metrics``, ``/healthz`` and ``/readyz`` (aiohttp).

- ``/healthz``: 200 while the process runs and capture is alive. It never fails because
  a sink is down, so a liveness probe does not restart a forwarder that is buffering.
- ``/readyz``: 200 when every sink delivers (or has failed for less than
  ``ready_after_failing_s``); 503 with the failing sinks and their last error otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from forwarder.errors import StartupError
from forwarder.telemetry.metrics import Metrics

HealthReport = Callable[[], tuple[bool, Mapping[str, Any]]]


class StatusServer:
    """Serves metrics and health checks on one ``HOST:PORT``."""

    def __init__(
        self, listen: str, metrics: Metrics, *, healthy: HealthReport, ready: HealthReport
    ) -> None:
        host, _, port = listen.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._metrics = metrics
        self._healthy = healthy
        self._ready = ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve."""
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve(self._healthy))
        app.router.add_get("/readyz", self._serve(self._ready))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as error:
            await self._runner.cleanup()
            raise StartupError(
                f"cannot serve metrics on {self._host}:{self._port}: {error.strerror}"
            ) from error

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @staticmethod
    def _serve(report: HealthReport) -> Callable[[web.Request], Any]:
        async def handler(_request: web.Request) -> web.Response:
            ok, details = report()
            return web.Response(
                status=200 if ok else 503,
                body=orjson.dumps({"ok": ok, **details}),
                content_type="application/json",
            )

        return handler
