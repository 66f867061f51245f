"""Sink registry: every sink type's config model, discriminated by ``type``.

Each sink module declares ``<Name>SinkConfig`` (a StrictModel with ``type: Literal[...]``
and ``build(name, context) -> Sink``); adding a sink type means adding it here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from forwarder.sinks.base import Batch, Sink, SinkContext
from forwarder.sinks.elasticsearch import ElasticsearchSinkConfig
from forwarder.sinks.file import FileSinkConfig
from forwarder.sinks.http import HttpSinkConfig
from forwarder.sinks.kafka import KafkaSinkConfig
from forwarder.sinks.loki import LokiSinkConfig
from forwarder.sinks.outcome import Outcome, Rejection, Verdict
from forwarder.sinks.stdout import StdoutSinkConfig

SinkConfig = Annotated[
    StdoutSinkConfig
    | FileSinkConfig
    | KafkaSinkConfig
    | LokiSinkConfig
    | ElasticsearchSinkConfig
    | HttpSinkConfig,
    Field(discriminator="type"),
]

__all__ = [
    "Batch",
    "ElasticsearchSinkConfig",
    "FileSinkConfig",
    "HttpSinkConfig",
    "KafkaSinkConfig",
    "LokiSinkConfig",
    "Outcome",
    "Rejection",
    "Sink",
    "SinkConfig",
    "SinkContext",
    "StdoutSinkConfig",
    "Verdict",
]
