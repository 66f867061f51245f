"""What the ``loki``, ``elasticsearch`` and ``http`` sinks share: one aiohttp client.

One place for the session (connection pool, TLS, timeouts), gzip, ``Retry-After``
(RFC 9110 section 10.2.3: delta-seconds or an HTTP-date) and the two pure
classifications every HTTP sink uses. Sinks keep only their protocol's own semantics.
Their options (endpoint, authentication, TLS) are in :mod:`forwarder.sinks.http.config`.

:func:`classify_reply`, unless a sink handles a status itself first::

    2xx                                  delivered
    3xx, 401, 403 (+ a sink's own, 404)  operator needed: retried, shown on /readyz
    413                                  too large: the worker splits the batch
    408, 429, 5xx (except a sink's own)  unavailable, with the server's Retry-After
    any other status                     every item refused under the sink's reason

:func:`classify_error` (no answer): a TLS failure (bad CA, bad client certificate) needs
an operator; connection failures, timeouts and anything else are retried.
"""

from __future__ import annotations

import gzip
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from forwarder.sinks.http.config import Compression
from forwarder.sinks.outcome import Outcome, describe

GZIP_LEVEL = 6
_BODY_EXCERPT_BYTES = 512


@dataclass(frozen=True, slots=True)
class HttpReply:
    """An HTTP answer, read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    truncated: bool = False
    """The body is only the first ``max_reply_bytes`` the sender asked to read."""

    @property
    def retry_after_s(self) -> float | None:
        """The server's ``Retry-After`` in seconds, or None if absent or unreadable."""
        return parse_retry_after(self.headers.get("Retry-After"))

    def excerpt(self) -> str:
        """The start of the body, for messages and dead-letter details."""
        text = self.body[:_BODY_EXCERPT_BYTES].decode("utf-8", "replace").strip()
        return text + ("..." if len(self.body) > _BODY_EXCERPT_BYTES else "")


class HttpClient:
    """One pooled aiohttp session to one URL; sends a body, returns the whole answer.

    Connection trouble is raised as aiohttp raises it (no answer): see :func:`classify_error`.
    """

    def __init__(
        self,
        url: URL,
        *,
        headers: Mapping[str, str],
        tls: ssl.SSLContext | None,
        timeout_s: float,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self._headers = dict(headers)
        self._tls = tls
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._owns_session = session is None

    async def start(self) -> None:
        """Create the session (it must be made inside the running loop)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._tls if self._tls is not None else True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"User-Agent": "kmsg-forwarder"},
            )

    async def send(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        method: str = "POST",
        max_reply_bytes: int | None = None,
    ) -> HttpReply:
        """Send ``body`` and read the answer (``start()`` first), at most ``max_reply_bytes``."""
        if self._session is None:
            raise RuntimeError(f"HTTP client for {self.url} was not started")
        merged = CIMultiDict(self._headers)
        merged.update(headers)
        async with self._session.request(
            method,
            self.url,
            data=body,
            headers=merged,
            timeout=self._timeout,
            allow_redirects=False,  # a redirected POST turns into a bodyless GET
        ) as response:
            if max_reply_bytes is None:
                return HttpReply(response.status, response.headers, await response.read())
            read = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                read += chunk
                if len(read) > max_reply_bytes:
                    # The rest is left unread; aiohttp closes such a connection.
                    body = bytes(read[:max_reply_bytes])
                    return HttpReply(response.status, response.headers, body, truncated=True)
            return HttpReply(response.status, response.headers, bytes(read))

    async def close(self) -> None:
        """Close the session if this client made it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None if self._owns_session else self._session


def compress(body: bytes, compression: Compression) -> tuple[bytes, dict[str, str]]:
    """Return the body to send and its ``Content-Encoding`` header (if any)."""
    if compression == "gzip":
        return gzip.compress(body, GZIP_LEVEL, mtime=0), {"Content-Encoding": "gzip"}
    return body, {}


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now_s is None else now_s))


def classify_reply(
    reply: HttpReply,
    what: str,
    items: Iterable[int],
    *,
    reason: str,
    config_statuses: frozenset[int] = frozenset(),
    permanent_statuses: frozenset[int] = frozenset(),
) -> Outcome:
    """The Outcome an HTTP status means for the request that carried ``items`` (indices).

    A permanent status refuses every one of ``items`` under the sink's low-cardinality
    ``reason`` (e.g. ``http_4xx``), with the status and the start of the body as detail.
    """
    status = reply.status
    if 200 <= status < 300:
        return Outcome.delivered()
    message = f"{what}: HTTP {status}: {reply.excerpt()}"
    if status in {401, 403} or 300 <= status < 400 or status in config_statuses:
        return Outcome.operator_needed(message, retry_after_s=reply.retry_after_s)
    if status == 413:
        return Outcome.too_large(message)
    if status in {408, 429} or (status >= 500 and status not in permanent_statuses):
        return Outcome.unavailable(message, retry_after_s=reply.retry_after_s)
    return Outcome.refused(items, reason, message)


def classify_error(error: Exception, url: URL) -> Outcome:
    """The Outcome of no answer from ``url``: TLS trouble needs an operator, the rest a retry."""
    if isinstance(error, aiohttp.ClientSSLError):
        return Outcome.operator_needed(f"TLS to {url.host} failed: {error}")
    return Outcome.unavailable(f"{url} failed: {describe(error)}")
