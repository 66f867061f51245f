"""The ``loki`` sink's configuration: ``[sinks.NAME]`` with ``type = "loki"``.

Labels, structured metadata and the limits Loki enforces, checked when the config is
loaded. Config only: the sink itself (:mod:`forwarder.sinks.loki.sink`, with aiohttp, cramjam
and the push encoder) loads when ``build`` creates it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, Literal

from pydantic import Field, field_validator, model_validator

from forwarder.sinks.base import Sink, SinkContext
from forwarder.sinks.http.config import HttpSinkConfigBase, endpoint_url

if TYPE_CHECKING:
    from yarl import URL

PUSH_PATH: Final = "/loki/api/v1/push"
LABEL_FIELDS: Final = frozenset(
    {"host", "facility", "level", "facility_code", "level_code", "subsystem", "device", "event",
     "class"}
)  # fmt: skip
METADATA_FIELDS: Final = LABEL_FIELDS | {"seq", "boot_id", "id", "caller", "monotonic_us", "flags"}
MAX_LABEL_VALUE_BYTES: Final = 2048
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MAX_LABEL_NAME_BYTES: Final = 1024


class LokiSinkConfig(HttpSinkConfigBase):
    """``type = "loki"``: where and how to push; limits mirror Loki's defaults."""

    type: Literal["loki"]
    tenant_id: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    label_fields: list[str] = Field(default_factory=lambda: ["host", "facility", "level"])
    structured_metadata: list[str] = Field(
        default_factory=lambda: ["seq", "boot_id", "id", "subsystem", "device"]
    )
    line: Literal["message", "json"] = "message"
    encoding: Literal["json", "protobuf"] = "protobuf"
    max_line_bytes: int = Field(default=256 * 1024, ge=1)
    max_label_names: int = Field(default=15, ge=1)
    max_age_s: float = Field(default=7 * 24 * 3600, ge=0)
    max_future_s: float = Field(default=600, ge=0)

    @field_validator("labels")
    @classmethod
    def _static_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for name, value in labels.items():
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"label name {name!r} must match [a-zA-Z_][a-zA-Z0-9_]*, no __")
            if len(name.encode()) > _MAX_LABEL_NAME_BYTES:
                raise ValueError(f"label name {name[:32]!r}... is over 1024 bytes")
            if not value or len(value.encode()) > MAX_LABEL_VALUE_BYTES:
                raise ValueError(f"label {name!r} needs a value of 1 to 2048 bytes")
        return labels

    @field_validator("label_fields")
    @classmethod
    def _label_fields(cls, names: list[str]) -> list[str]:
        if unknown := [name for name in names if name not in LABEL_FIELDS]:
            raise ValueError(
                f"{unknown} cannot be labels (high cardinality or unknown); "
                f"use some of {sorted(LABEL_FIELDS)}, and structured_metadata for the rest"
            )
        return names

    @field_validator("structured_metadata")
    @classmethod
    def _metadata_fields(cls, names: list[str]) -> list[str]:
        if unknown := [name for name in names if name not in METADATA_FIELDS]:
            raise ValueError(f"unknown record fields {unknown}: use {sorted(METADATA_FIELDS)}")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> LokiSinkConfig:
        if overlap := self.labels.keys() & set(self.label_fields):
            raise ValueError(f"labels {sorted(overlap)} are both static and from records")
        if len(self.labels) + len(self.label_fields) > self.max_label_names:
            raise ValueError(f"more than max_label_names={self.max_label_names} labels")
        if not self.labels and "host" not in self.label_fields:
            raise ValueError("every stream needs a label: set labels or keep host in label_fields")
        if self.encoding == "protobuf" and self.compression != "none":
            raise ValueError("protobuf bodies are always snappy-compressed: drop compression")
        return self

    def push_url(self) -> URL:
        """The push URL: the endpoint itself if it has a path, else ``/loki/api/v1/push``."""
        url = endpoint_url(self.endpoint)
        return url if url.path not in {"", "/"} else url.with_path(PUSH_PATH)

    def build(self, name: str, context: SinkContext) -> Sink:  # noqa: ARG002 - interface
        """Create the Loki sink."""
        from forwarder.sinks.loki.sink import LokiSink  # noqa: PLC0415 - aiohttp, cramjam on use only

        return LokiSink(name, self)
