"""The ``elasticsearch`` sink's configuration: ``[sinks.NAME]`` with ``type = "elasticsearch"``.

Index or data stream name rules, the bulk action and API-key authentication, checked when
the config is loaded. Config only: the sink (:mod:`forwarder.sinks.elasticsearch.sink`, with
aiohttp) loads when ``build`` creates it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Literal

import msgspec

from forwarder.config_errors import FieldError
from forwarder.errors import ConfigError
from forwarder.options import Secret, read_secret
from forwarder.sinks.base import Sink, SinkContext
from forwarder.sinks.http.config import HttpSinkConfigBase, endpoint_url

if TYPE_CHECKING:
    from yarl import URL

_INDEX_FORBIDDEN: Final = re.compile(r'[\\/*?"<>| ,#:A-Z]')


class ElasticsearchSinkConfig(HttpSinkConfigBase, tag="elasticsearch", frozen=True, kw_only=True):
    """``type = "elasticsearch"``: cluster URL, target index or data stream, action."""

    index: str = "logs-kmsg-default"
    action: Literal["create", "index"] = "create"
    max_bulk_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 10 * 1024 * 1024
    api_key: Secret | None = None
    api_key_file: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        index = self.index
        if (
            not index
            or _INDEX_FORBIDDEN.search(index)
            or index[0] in "-_+"
            or index in {".", ".."}
            or len(index.encode()) > 255
        ):
            raise FieldError(
                "index",
                'must be lowercase, without \\ / * ? " < > | space , # :, '
                "not start with - _ +, at most 255 bytes",
            )

    def _has_api_key(self) -> bool:
        return self.api_key is not None or self.api_key_file is not None

    def authorization(self) -> str | None:
        """``ApiKey <encoded>`` when an API key is set, else basic or bearer."""
        try:
            api_key = read_secret(self.api_key, self.api_key_file, "api_key")
        except ValueError as error:
            raise ConfigError(str(error)) from error
        return f"ApiKey {api_key}" if api_key is not None else super().authorization()

    def bulk_url(self) -> URL:
        """``<endpoint>/<index>/_bulk``."""
        url = endpoint_url(self.endpoint)
        return url.with_path(url.path.rstrip("/") + f"/{self.index}/_bulk")

    def build(self, name: str, context: SinkContext) -> Sink:  # noqa: ARG002 - interface
        """Create the Elasticsearch sink."""
        from forwarder.sinks.elasticsearch.sink import ElasticsearchSink  # noqa: PLC0415 - on use only

        return ElasticsearchSink(name, self)
