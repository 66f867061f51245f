"""A strict Elasticsearch ``_bulk`` receiver, written from the documented API.

https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-bulk: NDJSON,
``Content-Type: application/x-ndjson``, an action line then a source line per
document, the body ending with a newline; answers ``{"took", "errors", "items"}`` with
items in request order. ``create`` of an existing ``_id`` is a per-item 409; data
streams (``logs-*``) take only ``create``. Item statuses can be scripted per document.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.receivers.base import ApiViolationError, Receiver, require

_ERROR_TYPES = {
    400: "mapper_parsing_exception",
    403: "security_exception",
    409: "version_conflict_engine_exception",
    429: "es_rejected_execution_exception",
    500: "internal_server_error",
    503: "unavailable_shards_exception",
}


@dataclass
class ItemRule:
    """Documents whose source contains ``contains`` get ``statuses`` on their 1st, 2nd... try.

    With ``forever`` the last status repeats; otherwise later tries are handled normally.
    """

    contains: str
    statuses: tuple[int, ...]
    forever: bool = False
    tries: dict[str, int] = field(default_factory=dict)

    def status(self, doc_id: str) -> int | None:
        """The scripted status of this document's next try, or None."""
        attempt = self.tries.get(doc_id, 0)
        self.tries[doc_id] = attempt + 1
        if attempt < len(self.statuses):
            return self.statuses[attempt]
        return self.statuses[-1] if self.forever else None


class ElasticsearchReceiver(Receiver):
    """Validates ``_bulk`` requests and stores documents by ``_id``."""

    def __init__(
        self,
        *,
        index: str = "logs-kmsg-default",
        authorization: str | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        super().__init__(authorization=authorization, max_body_bytes=max_body_bytes)
        self.index = index
        self.docs: dict[str, dict[str, Any]] = {}
        self.item_rules: list[ItemRule] = []
        self.item_statuses: list[int] = []
        self.tries: Counter[str] = Counter()
        self.bulks_with_retryable_items = 0

    def docs_containing(self, text: str) -> list[dict[str, Any]]:
        """Stored documents whose message contains ``text``, by seq."""
        found = [doc for doc in self.docs.values() if text in str(doc.get("message", ""))]
        return sorted(found, key=lambda doc: doc.get("seq", -1))

    def handle(self, request: web.Request, body: bytes) -> web.Response:
        """Validate one bulk request and judge every item."""
        require(request.method in {"POST", "PUT"}, f"method {request.method}")
        require(request.path == f"/{self.index}/_bulk", f"path {request.path}")
        content_type = request.headers.get("Content-Type", "")
        require(content_type == "application/x-ndjson", f"Content-Type {content_type!r}")
        require(body.endswith(b"\n"), "bulk body must end with a newline")
        lines = body[:-1].split(b"\n")
        require(len(lines) % 2 == 0, "odd number of lines: action without source")
        items = [self._item(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]
        statuses = [next(iter(item.values()))["status"] for item in items]
        errors = any(status >= 300 for status in statuses)
        self.bulks_with_retryable_items += any(s == 429 or s >= 500 for s in statuses)
        answer = {"took": 1, "errors": errors, "items": items}
        return web.Response(status=200, body=orjson.dumps(answer), content_type="application/json")

    def _item(self, action_line: bytes, source_line: bytes) -> dict[str, Any]:
        action = _json_object(action_line, "action line")
        require(len(action) == 1, f"action line {action!r} must have one key")
        ((verb, meta),) = action.items()
        require(verb in {"create", "index"}, f"action {verb!r}")
        require(isinstance(meta, dict) and set(meta) <= {"_id", "_index"}, f"metadata {meta!r}")
        doc_id = meta.get("_id")
        require(isinstance(doc_id, str) and bool(doc_id), "every document needs an _id")
        source = _json_object(source_line, "source line")
        require(isinstance(source.get("@timestamp"), str), "source without @timestamp")
        require(source.get("id") == doc_id, "_id differs from the record id")
        self.tries[doc_id] += 1
        status = self._status(verb, doc_id, source)
        self.item_statuses.append(status)
        outcome: dict[str, Any] = {"_index": self.index, "_id": doc_id, "status": status}
        if status == 400 and self.index.startswith("logs-") and verb != "create":
            reason = "only write ops with an op_type of create are allowed in data streams"
            outcome["error"] = {"type": "illegal_argument_exception", "reason": reason}
        elif status >= 300:
            kind = _ERROR_TYPES.get(status, "illegal_argument_exception")
            outcome["error"] = {"type": kind, "reason": f"scripted {status} for {doc_id}"}
        else:
            outcome["result"] = "created" if status == 201 else "updated"
        return {verb: outcome}

    def _status(self, verb: str, doc_id: str, source: dict[str, Any]) -> int:
        text = orjson.dumps(source).decode()
        for rule in self.item_rules:
            if rule.contains in text and (scripted := rule.status(doc_id)) is not None:
                return scripted
        if self.index.startswith("logs-") and verb != "create":
            return 400
        if doc_id in self.docs:
            if verb == "create":
                return 409
            self.docs[doc_id] = source
            return 200
        self.docs[doc_id] = source
        return 201


def _json_object(line: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise ApiViolationError(f"{what} is not JSON: {line[:80]!r}") from error
    require(isinstance(value, dict), f"{what} is not an object")
    return value
