"""Sink registry: every sink type's config model, discriminated by ``type``.

Each sink type declares ``<Name>SinkConfig`` (a StrictModel with ``type: Literal[...]``
and ``build(name, context) -> Sink``); adding a sink type means adding it here. Config
modules import no client library: ``build`` imports the sink's own module (aiohttp,
aiokafka, cramjam), so a process loads only what its config uses.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from forwarder.sinks.base import Batch, Sink, SinkContext
from forwarder.sinks.elasticsearch.config import ElasticsearchSinkConfig
from forwarder.sinks.file import FileSinkConfig
from forwarder.sinks.http.config import HttpSinkConfig
from forwarder.sinks.kafka.config import KafkaSinkConfig
from forwarder.sinks.loki.config import LokiSinkConfig
from forwarder.sinks.otlp.config import OtlpSinkConfig
from forwarder.sinks.outcome import Outcome, Rejection, Verdict
from forwarder.sinks.stdout import StdoutSinkConfig

SinkConfig = Annotated[
    StdoutSinkConfig
    | FileSinkConfig
    | KafkaSinkConfig
    | LokiSinkConfig
    | ElasticsearchSinkConfig
    | HttpSinkConfig
    | OtlpSinkConfig,
    Field(discriminator="type"),
]

__all__ = [
    "Batch",
    "ElasticsearchSinkConfig",
    "FileSinkConfig",
    "HttpSinkConfig",
    "KafkaSinkConfig",
    "LokiSinkConfig",
    "OtlpSinkConfig",
    "Outcome",
    "Rejection",
    "Sink",
    "SinkConfig",
    "SinkContext",
    "StdoutSinkConfig",
    "Verdict",
]
