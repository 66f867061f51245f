"""A strict generic HTTP log receiver: NDJSON or JSON array, gzip, Idempotency-Key.

Checks what the ``http`` sink documents: the method and path, ``Content-Type``
(``application/x-ndjson`` or ``application/json``), NDJSON framing (one JSON object
per line, every line ending in a newline, no blank lines), an ``Idempotency-Key``
header as a structured-field string, and stores events by ``id``.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

import orjson
from aiohttp import web

from tests.receivers.base import ApiViolationError, Receiver, require

_SF_STRING = re.compile(r'"[\x20\x21\x23-\x5b\x5d-\x7e]+"')


class HttpReceiver(Receiver):
    """Validates batches and stores events by id."""

    def __init__(
        self,
        *,
        path: str = "/ingest",
        method: str = "POST",
        body_format: str = "ndjson",
        authorization: str | None = None,
        required_headers: dict[str, str] | None = None,
        max_body_bytes: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(authorization=authorization, max_body_bytes=max_body_bytes, tls=tls)
        self.path = path
        self.method = method
        self.body_format = body_format
        self.required_headers = required_headers or {}
        self.events: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.keys: list[str] = []

    def events_containing(self, text: str) -> list[dict[str, Any]]:
        """Stored events whose message contains ``text``, by seq."""
        found = [event for event in self.events.values() if text in str(event.get("message", ""))]
        return sorted(found, key=lambda event: event.get("seq", -1))

    def handle(self, request: web.Request, body: bytes) -> web.Response:
        """Validate and store one batch."""
        require(request.method == self.method, f"method {request.method}, want {self.method}")
        require(request.path == self.path, f"path {request.path}, want {self.path}")
        for name, value in self.required_headers.items():
            require(
                request.headers.get(name) == value, f"header {name}: {request.headers.get(name)!r}"
            )
        key = request.headers.get("Idempotency-Key", "")
        require(bool(_SF_STRING.fullmatch(key)), f"Idempotency-Key {key!r} is not an sf-string")
        self.keys.append(key)
        content_type = request.headers.get("Content-Type")
        if self.body_format == "ndjson":
            require(content_type == "application/x-ndjson", f"Content-Type {content_type!r}")
            require(body.endswith(b"\n"), "NDJSON body must end with a newline")
            events = [_object(line) for line in body[:-1].split(b"\n")]
        else:
            require(content_type == "application/json", f"Content-Type {content_type!r}")
            events = _array(body)
        require(bool(events), "empty batch")
        for event in events:
            event_id = event.get("id")
            require(isinstance(event_id, str), "event without id")
            self.duplicates += event_id in self.events
            self.events[event_id] = event
        return web.Response(status=200, text="ok")


def _object(line: bytes) -> dict[str, Any]:
    require(bool(line), "blank NDJSON line")
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise ApiViolationError(f"NDJSON line is not JSON: {line[:80]!r}") from error
    require(isinstance(value, dict), "NDJSON line is not an object")
    return value


def _array(body: bytes) -> list[dict[str, Any]]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiViolationError("body is not JSON") from error
    require(isinstance(value, list), "body is not a JSON array")
    require(all(isinstance(item, dict) for item in value), "array items must be objects")
    return value
