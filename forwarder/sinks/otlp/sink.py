"""The ``otlp`` sink: kernel logs as OTLP/HTTP logs, with the spec's answers.

Spec: https://github.com/open-telemetry/opentelemetry-proto/blob/main/docs/specification.md
(OTLP/HTTP). One request per batch: one ResourceLogs (this host), one ScopeLogs
(``kmsg-forwarder``), the records in seq order (mapping: :mod:`forwarder.sinks.otlp.mapping`).
What each answer means here::

    2xx, empty body or no/empty partialSuccess    delivered
    2xx, partialSuccess rejected 0, message       delivered, logged (otlp_warning)
    2xx, partialSuccess rejected k > 0            never retried (MUST NOT): which k is not
                                                  said, so the whole batch is dead-lettered
                                                  as otlp_partial ("k of n rejected: ...")
    2xx, unreadable body (or over 4 MiB)          delivered (the status said so), logged
    429, 503, 502, 504, retry_statuses            unavailable: retried, never sooner than
                                                  Retry-After
    400, n > 1 records                            split in halves by the worker: a refused
                                                  request stored nothing, so halves are no
                                                  duplicates and the good records get through
    400, one record                               dead-lettered as otlp_400
    413                                           split; one record alone: too_large
    3xx, 401, 403, 404, 405                       operator needed: kept, retried, /readyz 503
    any other status (500, 501, 4xx)              dead-lettered as otlp_4xx / otlp_5xx

Error bodies are read as ``google.rpc.Status`` (protobuf or JSON, by Content-Type) and
tolerated when empty or plain text. No answer at all is classified as for every HTTP sink
(:func:`forwarder.sinks.http.client.classify_error`): retried, TLS trouble needs an operator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Final

import aiohttp
import structlog

from forwarder.sinks.base import Batch, Sink
from forwarder.sinks.http.client import HttpClient, HttpReply, classify_error, compress
from forwarder.sinks.otlp import json_body, protobuf
from forwarder.sinks.otlp.config import CONFIG_STATUSES, OtlpSinkConfig
from forwarder.sinks.otlp.mapping import MACHINE_ID_PATH, log_record, resource_attributes
from forwarder.sinks.outcome import Outcome

SCOPE_NAME: Final = "kmsg-forwarder"
MAX_REPLY_BYTES: Final = 4 * 1024 * 1024  # the spec's default cap on response parsing
_CONTENT_TYPES: Final = {"protobuf": "application/x-protobuf", "json": "application/json"}
_log = structlog.get_logger(__name__)


class OtlpSink(Sink):
    """Posts each batch as one ``ExportLogsServiceRequest``."""

    def __init__(
        self,
        name: str,
        config: OtlpSinkConfig,
        *,
        host: str,
        session: aiohttp.ClientSession | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        environ: Mapping[str, str] = os.environ,
        machine_id_path: Path = MACHINE_ID_PATH,
    ) -> None:
        super().__init__(name)
        self._config = config
        self._client: HttpClient = config.client(config.logs_url(), session)
        self._clock_ns = clock_ns
        resource = resource_attributes(
            host=host,
            service_name=config.service_name,
            extra=config.resource,
            environ=environ,
            machine_id_path=machine_id_path,
        )
        encoder = protobuf if config.encoding == "protobuf" else json_body
        self._envelope = encoder.Envelope(resource, SCOPE_NAME, _version())
        self._content_type = _CONTENT_TYPES[config.encoding]
        self._retryable = config.retryable()
        self._what = f"OTLP {name}"

    async def start(self) -> None:
        """Open the connection pool."""
        await self._client.start()

    async def send(self, batch: Batch) -> Outcome:
        """Post the batch; return what the receiver's answer means for it."""
        # One observation time per request: the read time is not kept with the event yet.
        observed_ns = self._clock_ns()
        records = [log_record(event, observed_ns) for event in batch.events]
        body, headers = compress(self._envelope.request(records), self._config.compression)
        headers["Content-Type"] = self._content_type
        reply = await self._client.send(body, headers, max_reply_bytes=MAX_REPLY_BYTES)
        return self.answer(reply, len(records))

    def answer(self, reply: HttpReply, records: int) -> Outcome:  # noqa: PLR0911 - one per row
        """What ``reply`` means for a request of ``records`` records (table in the docstring)."""
        status = reply.status
        if 200 <= status < 300:
            return self._success(reply, records)
        detail = f"{self._what}: HTTP {status}: {self._error_message(reply)}"
        if status in self._retryable:
            return Outcome.unavailable(detail, retry_after_s=reply.retry_after_s)
        if status in CONFIG_STATUSES or 300 <= status < 400:
            return Outcome.operator_needed(detail, retry_after_s=reply.retry_after_s)
        if status == 400 and records > 1:
            # A 400 names no record: halving until the refused ones stand alone saves the rest.
            _log.warning("otlp_400_split", sink=self.name, records=records, detail=detail)
            return Outcome.split(detail, reason="otlp_400")
        if status == 400:
            return Outcome.refused(range(records), "otlp_400", detail)
        if status == 413:
            return Outcome.too_large(detail)
        reason = "otlp_4xx" if status < 500 else "otlp_5xx"
        return Outcome.refused(range(records), reason, detail)

    def classify(self, error: Exception) -> Outcome:
        """No answer from the receiver (see :func:`classify_error`)."""
        return classify_error(error, self._client.url)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.close()

    def _success(self, reply: HttpReply, records: int) -> Outcome:
        if not reply.body:
            return Outcome.delivered()
        decoder = json_body if self._answered_json(reply) else protobuf
        try:
            if reply.truncated:
                raise ValueError(f"an answer over {MAX_REPLY_BYTES} bytes")  # noqa: TRY301 - one path
            rejected, message = decoder.partial_success(reply.body)
        except ValueError as error:
            _log.warning(
                "otlp_unreadable_response", sink=self.name, status=reply.status, error=str(error)
            )
            return Outcome.delivered()
        if rejected > 0:
            detail = f"{rejected} of {records} rejected: {message or 'no message'}"
            _log.error("otlp_partial_success", sink=self.name, rejected=rejected, sent=records)
            return Outcome.refused(range(records), "otlp_partial", detail)
        if message:
            _log.warning("otlp_warning", sink=self.name, message=message)
        return Outcome.delivered()

    def _error_message(self, reply: HttpReply) -> str:
        """The Status message of an error body, else its text; empty bodies say so."""
        if not reply.body:
            return "(no body)"
        content_type = reply.headers.get("Content-Type", "")
        message = None
        if "json" in content_type:
            message = json_body.status_message(reply.body)
        elif "protobuf" in content_type:
            message = protobuf.status_message(reply.body)
        return message if message is not None else reply.excerpt()

    def _answered_json(self, reply: HttpReply) -> bool:
        content_type = reply.headers.get("Content-Type")
        return "json" in content_type if content_type else self._content_type.endswith("json")


def _version() -> str:
    try:
        return metadata.version("kmsg-forwarder")
    except metadata.PackageNotFoundError:
        return "unknown"
