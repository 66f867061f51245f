"""What every loopback receiver shares: a real aiohttp server, scripted replies, strictness.

A receiver listens on a free 127.0.0.1 port, records every request, answers scripted
replies first (nothing is stored for those), then validates the request against the
documented API. A request breaking the API is answered 400 and listed in
``violations``; leaving the ``async with`` block with violations fails the test.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


class ApiViolationError(Exception):
    """The request breaks the documented API."""


@dataclass(frozen=True)
class Reply:
    """A scripted answer for the next request."""

    status: int
    body: str | bytes = ""  # bytes are sent as they are (a protobuf error body)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request as it arrived (body decompressed)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    wire_bytes: int
    status: int = 0


class Receiver:
    """Base of the Loki, Elasticsearch and HTTP receivers."""

    def __init__(
        self,
        *,
        authorization: str | None = None,
        max_body_bytes: int | None = None,
        tls: ssl.SSLContext | None = None,
    ):
        self.authorization = authorization
        self.tls = tls
        self.max_body_bytes = max_body_bytes
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.statuses: list[int] = []
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        self._script.extend(replies)

    @property
    def scripted_left(self) -> int:
        """Scripted replies not used yet."""
        return len(self._script)

    async def __aenter__(self) -> Any:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Bodies are decompressed here, by hand, so a bad gzip stream is a violation.
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, kind: object, error: object, trace: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if error is None and self.violations:
            raise AssertionError(f"requests broke the API: {self.violations}")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        wire = await request.read()
        headers = dict(request.headers)
        try:
            body = _decode(wire, request.headers.get("Content-Encoding"))
        except ApiViolationError as violation:
            return self._violation(str(violation))
        self.requests.append(Request(request.method, request.path, headers, body, len(wire)))
        if self._script:
            reply = self._script.popleft()
            await asyncio.sleep(reply.delay_s)
            if isinstance(reply.body, bytes):
                response = web.Response(status=reply.status, body=reply.body, headers=reply.headers)
            else:
                response = web.Response(status=reply.status, text=reply.body, headers=reply.headers)
            return self._reply(response)
        if self.authorization is not None and headers.get("Authorization") != self.authorization:
            return self._reply(web.Response(status=401, text="unauthorized"))
        if self.max_body_bytes is not None and len(wire) > self.max_body_bytes:
            return self._reply(web.Response(status=413, text="request entity too large"))
        try:
            return self._reply(self.handle(request, body))
        except ApiViolationError as violation:
            return self._violation(str(violation))

    def handle(self, request: web.Request, body: bytes) -> web.Response:
        """Validate and store one request; subclasses implement their API."""
        raise NotImplementedError

    def _reply(self, response: web.Response) -> web.Response:
        self.statuses.append(response.status)
        return response

    def _violation(self, message: str) -> web.Response:
        self.violations.append(message)
        return self._reply(web.Response(status=400, text=f"receiver: API violation: {message}"))


def _decode(wire: bytes, encoding: str | None) -> bytes:
    if encoding is None:
        return wire
    if encoding != "gzip":
        raise ApiViolationError(f"unexpected Content-Encoding {encoding!r}")
    try:
        body = gzip.decompress(wire)
    except (OSError, EOFError, zlib.error) as error:
        raise ApiViolationError(f"Content-Encoding gzip but body is not gzip: {error}") from error
    return body


def require(condition: bool, message: str) -> None:
    """Raise a ApiViolationError with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ApiViolationError(message)
