"""The ``elasticsearch`` sink: Elasticsearch / OpenSearch ``_bulk`` with per-item verdicts.

API: https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-bulk. The
body is NDJSON, an action line and the event per document, ending with a newline;
``_id`` is the event id, so ``create`` (the default, and the only action data streams
take) makes re-sends idempotent: a 409 on ``create`` means already delivered.

A 200 may still carry ``"errors": true``: each item is judged alone. 2xx stored; 409 on
create a duplicate; 429 and 5xx sent again alone (not the whole bulk); any other 4xx
dead-lettered (``es_mapping`` for mapping errors, else ``es_4xx``). A whole request is
judged as in :mod:`forwarder.sinks.httpclient` (413 split, 429/5xx retried), 404
(wrong endpoint) being a configuration error and any other 4xx dead-lettering the
batch as ``es_request``. A body over ``max_bulk_bytes`` is split
by the pipeline before it is sent.
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp
import orjson

from forwarder.errors import BatchTooLargeError, RetryableSinkError
from forwarder.sinks.base import Batch, Rejection, SendResult, Sink
from forwarder.sinks.elasticsearch_config import ElasticsearchSinkConfig
from forwarder.sinks.httpclient import HttpClient, HttpReply, check_status, compress, reject_all

_MAPPING_ERRORS: Final = frozenset(
    {
        "mapper_parsing_exception",
        "document_parsing_exception",
        "strict_dynamic_mapping_exception",
    }
)


class ElasticsearchSink(Sink):
    """Sends batches as one ``_bulk`` request and judges every item."""

    def __init__(
        self,
        name: str,
        config: ElasticsearchSinkConfig,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(name)
        self._config = config
        self._client: HttpClient = config.client(config.bulk_url(), session)
        self._headers = {"Content-Type": "application/x-ndjson"}

    async def start(self) -> None:
        """Open the connection pool."""
        await self._client.start()

    async def send(self, batch: Batch) -> SendResult:
        """Bulk-send the batch; items are stored, duplicates, retried alone or rejected."""
        action = self._config.action
        lines = []
        for event in batch.events:
            lines.append(orjson.dumps({action: {"_id": event.id}}))
            lines.append(event.json)
        body = b"\n".join(lines) + b"\n"
        if len(body) > self._config.max_bulk_bytes:
            raise BatchTooLargeError(
                f"bulk of {len(body)} bytes > max_bulk_bytes={self._config.max_bulk_bytes}"
            )
        payload, encoding = compress(body, self._config.compression)
        reply = await self._client.send(payload, self._headers | encoding)
        what = f"Elasticsearch {self.name}"
        if (detail := check_status(reply, what, config_statuses=frozenset({404}))) is not None:
            return reject_all(batch.events, "es_request", detail)
        return self._judge(batch, reply)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.close()

    def _judge(self, batch: Batch, reply: HttpReply) -> SendResult:
        try:
            answer = orjson.loads(reply.body)
            items = answer["items"]
            errors = bool(answer["errors"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            # _id makes the bulk idempotent: sending it again is always safe.
            raise RetryableSinkError(f"unreadable _bulk answer: {reply.excerpt()}") from error
        if not isinstance(items, list) or len(items) != len(batch.events):
            raise RetryableSinkError(
                f"_bulk answered {len(items) if isinstance(items, list) else '?'} items "
                f"for {len(batch.events)} documents"
            )
        result = SendResult()
        if not errors:
            return result
        for event, item in zip(batch.events, items, strict=True):
            status, failure = _item(item)
            if 200 <= status < 300:
                continue
            if status == 409 and self._config.action == "create":
                result.duplicates += 1
            elif status == 429 or status >= 500:
                result.retry.append(event)
            else:
                kind = str(failure.get("type", ""))
                reason = "es_mapping" if kind in _MAPPING_ERRORS else "es_4xx"
                detail = f"HTTP {status} {kind}: {failure.get('reason', '')}".strip()
                result.rejected.append(Rejection(event, reason, detail))
        if result.retry:
            result.retry_after_s = reply.retry_after_s
        return result


def _item(item: Any) -> tuple[int, dict[str, Any]]:
    """Status and error object of one ``items[]`` entry (``{"create": {...}}``)."""
    try:
        (outcome,) = item.values()
        status = int(outcome["status"])
    except (AttributeError, ValueError, KeyError, TypeError):
        return 500, {"type": "unreadable_item", "reason": repr(item)[:200]}
    error = outcome.get("error")
    return status, error if isinstance(error, dict) else {}
