"""The ``elasticsearch`` sink: Elasticsearch / OpenSearch ``_bulk`` with per-item verdicts.

API: https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-bulk. The
body is NDJSON, an action line and the event per document, ending with a newline;
``_id`` is the event id, so ``create`` (the default, and the only action data streams
take) makes re-sends idempotent: a 409 on ``create`` means already delivered.

A 200 may still carry ``"errors": true``: each item is judged alone. 2xx stored; 409 on
create a duplicate; 429 and 5xx sent again alone (not the whole bulk); any other 4xx
dead-lettered (``es_mapping`` for mapping errors, else ``es_4xx``). A whole request is
judged as in :mod:`forwarder.sinks.http.client` (413 split, 429/5xx retried), 404
(wrong endpoint) needing an operator and any other 4xx dead-lettering the batch as
``es_request``. A body over ``max_bulk_bytes`` is answered "too large" before it is
sent, so the worker splits it.
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp
import orjson

from forwarder.encoding.reference import Event
from forwarder.sinks.base import Batch, Sink
from forwarder.sinks.elasticsearch.config import ElasticsearchSinkConfig
from forwarder.sinks.http.client import (
    HttpClient,
    HttpReply,
    classify_error,
    classify_reply,
    compress,
)
from forwarder.sinks.outcome import Outcome, Rejection

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

    async def send(self, batch: Batch) -> Outcome:
        """Bulk-send the batch; items are stored, duplicates, retried alone or rejected."""
        body = self._bulk_body(batch)
        if len(body) > self._config.max_bulk_bytes:
            return Outcome.too_large(
                f"bulk of {len(body)} bytes > max_bulk_bytes={self._config.max_bulk_bytes}"
            )
        payload, encoding = compress(body, self._config.compression)
        reply = await self._client.send(payload, self._headers | encoding)
        if 200 <= reply.status < 300:
            return self._judge(batch, reply)
        return classify_reply(
            reply,
            f"Elasticsearch {self.name}",
            range(len(batch)),
            reason="es_request",
            config_statuses=frozenset({404}),  # a wrong endpoint path: a person must fix it
        )

    def classify(self, error: Exception) -> Outcome:
        """No answer from the cluster (see :func:`classify_error`)."""
        return classify_error(error, self._client.url)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.close()

    def _bulk_body(self, batch: Batch) -> bytes:
        """Action line and document per record; a slice's ids are written from a template."""
        action = self._config.action
        lines: list[bytes] = []
        for part in batch.parts:
            if isinstance(part, Event):
                lines += (orjson.dumps({action: {"_id": part.id}}), part.json)
                continue
            # {"create":{"_id":"<boot_id>-<seq>"}}: the id is the boot id and the seq.
            head = orjson.dumps({action: {"_id": part.boot_id}})[:-3].replace(b"%", b"%%")
            head += b'-%d"}}'
            documents = part.lines()
            seqs = part.chunk.seqs
            for offset, document in enumerate(documents):
                lines += (head % seqs[part.start + offset], document)
        lines.append(b"")
        return b"\n".join(lines)

    def _judge(self, batch: Batch, reply: HttpReply) -> Outcome:
        """The per-item verdicts of a 2xx ``_bulk`` answer."""
        try:
            answer = orjson.loads(reply.body)
            items = answer["items"]
            errors = bool(answer["errors"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            # _id makes the bulk idempotent: sending it again is always safe.
            return Outcome.unavailable(f"unreadable _bulk answer: {reply.excerpt()}")
        if not isinstance(items, list) or len(items) != len(batch):
            return Outcome.unavailable(
                f"_bulk answered {len(items) if isinstance(items, list) else '?'} items "
                f"for {len(batch)} documents"
            )
        if not errors:
            return Outcome.delivered()
        retry: list[int] = []
        rejected: list[Rejection] = []
        duplicates = 0
        retry_status = 0
        for index, item in enumerate(items):
            status, failure = _item(item)
            if 200 <= status < 300:
                continue
            if status == 409 and self._config.action == "create":
                duplicates += 1
            elif status == 429 or status >= 500:
                retry.append(index)
                retry_status = status
            else:
                kind = str(failure.get("type", ""))
                reason = "es_mapping" if kind in _MAPPING_ERRORS else "es_4xx"
                detail = f"HTTP {status} {kind}: {failure.get('reason', '')}".strip()
                rejected.append(Rejection(index, reason, detail))
        return Outcome.answered(
            retry=retry,
            rejected=rejected,
            duplicates=duplicates,
            retry_after_s=reply.retry_after_s if retry else None,
            detail=f"items answered HTTP {retry_status}" if retry else "",
        )


def _item(item: Any) -> tuple[int, dict[str, Any]]:
    """Status and error object of one ``items[]`` entry (``{"create": {...}}``)."""
    try:
        (outcome,) = item.values()
        status = int(outcome["status"])
    except (AttributeError, ValueError, KeyError, TypeError):
        return 500, {"type": "unreadable_item", "reason": repr(item)[:200]}
    error = outcome.get("error")
    return status, error if isinstance(error, dict) else {}
