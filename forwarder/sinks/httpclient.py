"""What the ``loki``, ``elasticsearch`` and ``http`` sinks share: one aiohttp client.

One place for the session (connection pool, TLS, timeouts), gzip, ``Retry-After``
(RFC 9110 section 10.2.3: delta-seconds or an HTTP-date) and the mapping of an HTTP
answer onto the sink error tree. Sinks keep only their protocol's own semantics.

Status classes, unless a sink handles a status itself first::

    401, 403 (+ a sink's own, e.g. 404)  SinkConfigError   retried, shown on /readyz
    413                                  BatchTooLargeError the pipeline splits the batch
    408, 429, 5xx (except a sink's own)  RetryableSinkError with the server's Retry-After
    any other status                     every event rejected under the sink's reason

Connection failures and timeouts are retryable; TLS failures (bad CA, bad client
certificate) are configuration errors.
"""

from __future__ import annotations

import gzip
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from forwarder.encode import Event
from forwarder.errors import BatchTooLargeError, RetryableSinkError, SinkConfigError
from forwarder.sinks.base import Rejection, SendResult
from forwarder.sinks.http_config import Compression

GZIP_LEVEL = 6
_BODY_EXCERPT_BYTES = 512


@dataclass(frozen=True, slots=True)
class HttpReply:
    """An HTTP answer, read in full."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def retry_after_s(self) -> float | None:
        """The server's ``Retry-After`` in seconds, or None if absent or unreadable."""
        return parse_retry_after(self.headers.get("Retry-After"))

    def excerpt(self) -> str:
        """The start of the body, for messages and dead-letter details."""
        text = self.body[:_BODY_EXCERPT_BYTES].decode("utf-8", "replace").strip()
        return text + ("..." if len(self.body) > _BODY_EXCERPT_BYTES else "")


class HttpClient:
    """One pooled aiohttp session to one URL; sends a body, returns the whole answer."""

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
    ) -> HttpReply:
        """Send ``body``; connection trouble becomes a retryable (TLS: config) error."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        merged = CIMultiDict(self._headers)
        merged.update(headers)
        try:
            async with self._session.request(
                method,
                self.url,
                data=body,
                headers=merged,
                timeout=self._timeout,
                allow_redirects=False,  # a redirected POST turns into a bodyless GET
            ) as response:
                return HttpReply(response.status, response.headers, await response.read())
        except aiohttp.ClientSSLError as error:
            raise SinkConfigError(f"TLS to {self.url.host} failed: {error}") from error
        except (aiohttp.ClientError, TimeoutError) as error:
            what = type(error).__name__
            raise RetryableSinkError(f"{method} {self.url} failed: {what}: {error}") from error

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


def check_status(
    reply: HttpReply,
    what: str,
    *,
    config_statuses: frozenset[int] = frozenset(),
    permanent_statuses: frozenset[int] = frozenset(),
) -> str | None:
    """Raise the sink error a failing answer means; return a detail if it is permanent.

    None means 2xx. A returned detail means the batch can never be delivered as it is:
    the sink rejects its events under its own low-cardinality reason (``http_4xx``).
    """
    status = reply.status
    if 200 <= status < 300:
        return None
    message = f"{what}: HTTP {status}: {reply.excerpt()}"
    if status in {401, 403} or 300 <= status < 400 or status in config_statuses:
        raise SinkConfigError(message, retry_after_s=reply.retry_after_s)
    if status == 413:
        raise BatchTooLargeError(message)
    if status in {408, 429} or (status >= 500 and status not in permanent_statuses):
        raise RetryableSinkError(message, retry_after_s=reply.retry_after_s)
    return message


def reject_all(events: Sequence[Event], reason: str, detail: str) -> SendResult:
    """A result rejecting every event for one permanent reason."""
    return SendResult(rejected=[Rejection(event, reason, detail) for event in events])
