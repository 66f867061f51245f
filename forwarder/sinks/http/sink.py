"""The ``http`` sink: POST (or PUT) batches of events to any HTTP endpoint.

Conventions of log-shipping HTTP outputs (Vector's ``http`` sink, Fluent Bit's
``out_http``): NDJSON (``application/x-ndjson``, one event per line, each line ending in
a newline) or a JSON array (``application/json``), optional gzip, custom headers. An
``Idempotency-Key`` header (draft-ietf-httpapi-idempotency-key-header) derived from the
batch's first and last event id lets a receiver drop a re-sent batch.

2xx stored. 408, 429 and 5xx except 501, connection errors and timeouts are retried,
honouring ``Retry-After``; 413 is split by the worker; 401/403/404 need an operator
(retried, shown not-ready, data kept); any other status is permanent: the batch is
dead-lettered as ``http_4xx`` (501: ``http_5xx``; see :mod:`forwarder.sinks.http.client`).
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import aiohttp
from yarl import URL

from forwarder.sinks.base import Batch, Sink
from forwarder.sinks.http.client import HttpClient, classify_error, classify_reply, compress
from forwarder.sinks.http.config import HttpSinkConfig
from forwarder.sinks.outcome import Outcome

_CONTENT_TYPES = {"ndjson": "application/x-ndjson", "json_array": "application/json"}


class HttpSink(Sink):
    """Sends each batch as one request."""

    reads_lines_only: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        config: HttpSinkConfig,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(name)
        self._config = config
        self._client: HttpClient = config.client(URL(config.endpoint), session)

    async def start(self) -> None:
        """Open the connection pool."""
        await self._client.start()

    async def send(self, batch: Batch) -> Outcome:
        """Send the batch; any 2xx means every event was stored."""
        if self._config.format == "ndjson":
            body = batch.ndjson()
        else:
            body = b"[" + b",".join(batch.lines()) + b"]"
        payload, headers = compress(body, self._config.compression)
        headers["Content-Type"] = _CONTENT_TYPES[self._config.format]
        headers["Idempotency-Key"] = idempotency_key(batch)
        reply = await self._client.send(payload, headers, method=self._config.method)
        return classify_reply(
            reply,
            f"HTTP {self.name}",
            range(len(batch)),
            reason="http_4xx" if reply.status < 500 else "http_5xx",
            config_statuses=frozenset({404}),  # a wrong endpoint path: a person must fix it
            permanent_statuses=frozenset({501}),
        )

    def classify(self, error: Exception) -> Outcome:
        """No answer from the endpoint (see :func:`classify_error`)."""
        return classify_error(error, self._client.url)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.close()


def idempotency_key(batch: Batch) -> str:
    """A quoted key (a structured-field string) naming the batch's id range.

    The ids are deterministic, so a re-sent batch carries the same key; a split
    batch's halves get keys of their own.
    """
    digest = hashlib.sha256(f"{batch.first_id}\n{batch.last_id}".encode()).hexdigest()
    return f'"{digest[:32]}"'
