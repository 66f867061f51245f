"""What every HTTP-based sink (``loki``, ``elasticsearch``, ``http``) lets a user configure.

Config only: where, how long, how to authenticate (basic, bearer; secrets inline, from
``${ENV}`` or ``*_file``), headers and TLS. The config registry imports this module for
every config, so it loads no HTTP library; aiohttp (:mod:`forwarder.sinks.http.client`)
and the sink modules load only when ``build`` creates a sink.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from forwarder.config_errors import FieldError
from forwarder.errors import ConfigError
from forwarder.options import Secret, TlsConfig, read_secret
from forwarder.sinks.base import Sink, SinkConfigBase, SinkContext

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

    from forwarder.sinks.http.client import HttpClient

Compression = Literal["none", "gzip"]
_RESERVED_HEADERS = frozenset(
    {"content-length", "content-type", "content-encoding", "transfer-encoding", "host"}
)


class HttpSinkConfigBase(SinkConfigBase, frozen=True, kw_only=True):
    """Options of every HTTP-based sink: where, how long, how to authenticate, TLS."""

    endpoint: str
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    compression: Compression = "none"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    username: str | None = None
    password: Secret | None = None
    password_file: Path | None = None
    bearer_token: Secret | None = None
    bearer_token_file: Path | None = None
    tls: TlsConfig = TlsConfig()

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            url = endpoint_url(self.endpoint)
        except ValueError as error:
            raise FieldError("endpoint", f"not a URL: {error}") from None
        if url.scheme not in {"http", "https"} or not url.host:
            raise FieldError("endpoint", "must be an http:// or https:// URL with a host")
        for name in self.headers:
            if name.lower() in _RESERVED_HEADERS:
                raise FieldError("headers", f"header {name!r} is set by the sink itself")
        self._check_auth()

    def _check_auth(self) -> None:
        basic = self.username is not None or self.password is not None or self.password_file
        bearer = self.bearer_token is not None or self.bearer_token_file is not None
        if basic and self.username is None:
            raise ValueError("password needs a username")
        if sum(map(bool, (basic, bearer, self._has_api_key()))) > 1:
            raise ValueError("configure one kind of authentication only")
        header = any(name.lower() == "authorization" for name in self.headers)
        if header and (basic or bearer or self._has_api_key()):
            raise ValueError("an Authorization header and auth options exclude each other")

    def _has_api_key(self) -> bool:
        """Whether an API key is configured (only the Elasticsearch sink has one)."""
        return False

    def authorization(self) -> str | None:
        """The ``Authorization`` header value the options describe, secrets read now."""
        try:
            if self.username is not None:
                password = read_secret(self.password, self.password_file, "password") or ""
                token = base64.b64encode(f"{self.username}:{password}".encode()).decode()
                return f"Basic {token}"
            bearer = read_secret(self.bearer_token, self.bearer_token_file, "bearer_token")
        except ValueError as error:
            raise ConfigError(str(error)) from error
        return f"Bearer {bearer}" if bearer is not None else None

    def client(self, url: URL, session: aiohttp.ClientSession | None = None) -> HttpClient:
        """Build the client for ``url`` with these options (``session``: a test seam)."""
        from forwarder.sinks.http.client import HttpClient  # noqa: PLC0415 - aiohttp on use only

        headers = dict(self.headers)
        if (authorization := self.authorization()) is not None:
            headers["Authorization"] = authorization
        try:
            tls = self.tls.ssl_context() if url.scheme == "https" else None
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"TLS options: {error}") from error
        return HttpClient(url, headers=headers, tls=tls, timeout_s=self.timeout_s, session=session)


class HttpSinkConfig(HttpSinkConfigBase, tag="http", frozen=True, kw_only=True):
    """``type = "http"``: the full URL, method and body format."""

    method: Literal["POST", "PUT"] = "POST"
    format: Literal["ndjson", "json_array"] = "ndjson"

    def build(self, name: str, context: SinkContext) -> Sink:  # noqa: ARG002 - interface
        """Create the HTTP sink."""
        from forwarder.sinks.http.sink import HttpSink  # noqa: PLC0415 - aiohttp on use only

        return HttpSink(name, self)


def endpoint_url(endpoint: str) -> URL:
    """``endpoint`` parsed as a URL (yarl, as aiohttp uses it, loaded on first use)."""
    from yarl import URL  # noqa: PLC0415 - only configs with an HTTP sink need it

    return URL(endpoint)
