"""The ``otlp`` sink's configuration: ``[sinks.NAME]`` with ``type = "otlp"``.

OTLP/HTTP logs (https://github.com/open-telemetry/opentelemetry-proto/blob/main/docs/specification.md):
where to post, protobuf or JSON, the resource this host describes and which extra statuses
to retry. Config only: the sink (:mod:`forwarder.sinks.otlp.sink`, with aiohttp and the
encoders) loads when ``build`` creates it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Final, Literal

import msgspec

from forwarder.config_errors import FieldError
from forwarder.sinks.base import Sink, SinkContext
from forwarder.sinks.http.config import Compression, HttpSinkConfigBase, endpoint_url

if TYPE_CHECKING:
    from yarl import URL

LOGS_PATH: Final = "/v1/logs"
RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})  # the spec's list
CONFIG_STATUSES: Final = frozenset({401, 403, 404, 405})  # a person must fix these
_NEVER_RETRIED: Final = frozenset({400, 413})  # split by the worker instead

ResourceValue = str | bool | int | float


class OtlpSinkConfig(HttpSinkConfigBase, tag="otlp", frozen=True, kw_only=True):
    """``type = "otlp"``: the endpoint, encoding, resource and statuses to retry."""

    encoding: Literal["protobuf", "json"] = "protobuf"
    compression: Compression = "gzip"
    service_name: Annotated[str, msgspec.Meta(min_length=1)] = "kernel"
    resource: dict[str, ResourceValue] = msgspec.field(default_factory=dict)
    retry_statuses: list[int] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if "" in self.resource:
            raise FieldError("resource", "resource attribute names must not be empty")
        if "service.name" in self.resource:
            raise FieldError("resource", "set service_name instead of resource.service.name")
        for status in self.retry_statuses:
            if not 400 <= status <= 599:
                problem = f"{status} is not an HTTP error status (400-599)"
            elif status in _NEVER_RETRIED:
                problem = f"{status} is never re-sent as the same request: it is split"
            elif status in CONFIG_STATUSES:
                problem = f"{status} is already retried, as a configuration problem"
            else:
                continue
            raise FieldError("retry_statuses", problem)

    def retryable(self) -> frozenset[int]:
        """Statuses retried with backoff: the spec's 429, 502, 503, 504 and ``retry_statuses``."""
        return RETRYABLE_STATUSES | frozenset(self.retry_statuses)

    def logs_url(self) -> URL:
        """The URL to post to: the endpoint itself if it has a path, else ``/v1/logs``."""
        url = endpoint_url(self.endpoint)
        return url if url.path not in {"", "/"} else url.with_path(LOGS_PATH)

    def build(self, name: str, context: SinkContext) -> Sink:
        """Create the OTLP sink."""
        from forwarder.sinks.otlp.sink import OtlpSink  # noqa: PLC0415 - aiohttp on use only

        return OtlpSink(name, self, host=context.host)
