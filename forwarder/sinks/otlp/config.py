"""The ``otlp`` sink's configuration: ``[sinks.NAME]`` with ``type = "otlp"``.

OTLP/HTTP logs (https://github.com/open-telemetry/opentelemetry-proto/blob/main/docs/specification.md):
where to post, protobuf or JSON, the resource this host describes and which extra statuses
to retry. Config only: the sink (:mod:`forwarder.sinks.otlp.sink`, with aiohttp and the
encoders) loads when ``build`` creates it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

from pydantic import Field, field_validator

from forwarder.sinks.base import Sink, SinkContext
from forwarder.sinks.http.config import Compression, HttpSinkConfigBase, endpoint_url

if TYPE_CHECKING:
    from yarl import URL

LOGS_PATH: Final = "/v1/logs"
RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})  # the spec's list
CONFIG_STATUSES: Final = frozenset({401, 403, 404, 405})  # a person must fix these
_NEVER_RETRIED: Final = frozenset({400, 413})  # split by the worker instead

ResourceValue = str | bool | int | float


class OtlpSinkConfig(HttpSinkConfigBase):
    """``type = "otlp"``: the endpoint, encoding, resource and statuses to retry."""

    type: Literal["otlp"]
    encoding: Literal["protobuf", "json"] = "protobuf"
    compression: Compression = "gzip"
    service_name: str = Field(default="kernel", min_length=1)
    resource: dict[str, ResourceValue] = Field(default_factory=dict)
    retry_statuses: list[int] = Field(default_factory=list)

    @field_validator("resource")
    @classmethod
    def _resource(cls, value: dict[str, ResourceValue]) -> dict[str, ResourceValue]:
        if "" in value:
            raise ValueError("resource attribute names must not be empty")
        if "service.name" in value:
            raise ValueError("set service_name instead of resource.service.name")
        return value

    @field_validator("retry_statuses")
    @classmethod
    def _retry_statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 400 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP error status (400-599)")
            if status in _NEVER_RETRIED:
                raise ValueError(f"{status} is never re-sent as the same request: it is split")
            if status in CONFIG_STATUSES:
                raise ValueError(f"{status} is already retried, as a configuration problem")
        return value

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
