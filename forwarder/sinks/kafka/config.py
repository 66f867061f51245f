"""The ``kafka`` sink's configuration: ``[sinks.NAME]`` with ``type = "kafka"``.

What a user may write (servers, topic, acks, idempotence, codec, sizes, timeouts,
headers, TLS, SASL), checked before the sink starts: a topic name Kafka would refuse,
a codec this installation lacks or options that contradict each other are config errors
naming their path, not a producer that fails at the first batch. Each option maps
onto an ``AIOKafkaProducer`` keyword (``producer_options``); ``build`` hands them to
:class:`~forwarder.sinks.kafka.sink.KafkaSink`, which owns the producer session,
delivery and failure classification.

Producer settings: https://aiokafka.readthedocs.io/en/stable/api.html#producer-class
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from forwarder.options import StrictModel, TlsConfig, read_secret
from forwarder.sinks.base import Sink, SinkConfigBase, SinkContext

Compression = Literal["zstd", "lz4", "snappy", "gzip", "none"]
HeaderName = Literal[
    "boot_id", "seq", "id", "event", "class", "host", "level", "facility", "content-type"
]  # fmt: skip
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def codec_installed(compression: Compression) -> bool:
    """Whether aiokafka can use ``compression`` here (gzip is stdlib; the rest need cramjam)."""
    from aiokafka import codec  # noqa: PLC0415 - aiokafka loads only for a kafka sink

    checks: dict[str, Callable[[], bool]] = {
        "zstd": codec.has_zstd,
        "lz4": codec.has_lz4,
        "snappy": codec.has_snappy,
    }
    return checks.get(compression, lambda: True)()


def best_compression() -> Compression:
    """The best codec this installation has: zstd, then lz4, else gzip (stdlib)."""
    preferred: tuple[Compression, ...] = ("zstd", "lz4")
    return next((codec for codec in preferred if codec_installed(codec)), "gzip")


def _default_headers() -> list[HeaderName]:
    return ["boot_id", "seq", "event", "content-type"]


class SaslConfig(StrictModel):
    """``[sinks.NAME.sasl]``: SASL authentication; the password inline (``${ENV}``) or in a file."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str = Field(min_length=1)
    password: SecretStr | None = None
    password_file: Path | None = None
    _secret: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _resolve_password(self) -> SaslConfig:
        secret = read_secret(self.password, self.password_file, "password")
        if not secret:
            raise ValueError("sasl needs password (e.g. '${KAFKA_PASSWORD}') or password_file")
        self._secret = secret
        return self

    @property
    def secret(self) -> str:
        """The resolved password."""
        return self._secret


class KafkaSinkConfig(SinkConfigBase):
    """``type = "kafka"``: produce every event to ``topic`` (README: each default's reason)."""

    type: Literal["kafka"]
    bootstrap_servers: list[str] = Field(min_length=1)
    topic: str
    client_id: str = "kmsg-forwarder"
    acks: Literal["all", 1, 0] = "all"
    enable_idempotence: bool = True
    compression: Compression = Field(default_factory=best_compression)
    linger_ms: int = Field(default=5, ge=0)
    max_batch_bytes: int = Field(default=524_288, ge=1024)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    request_timeout_ms: int = Field(default=10_000, ge=100)
    delivery_timeout_ms: int = Field(default=30_000, ge=100)
    key: str | None = Field(default=None, min_length=1)
    headers: list[HeaderName] = Field(default_factory=_default_headers)
    tls: TlsConfig | None = None
    sasl: SaslConfig | None = None

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, servers: list[str]) -> list[str]:
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap server {server!r} must be HOST:PORT")
        return servers

    @field_validator("topic")
    @classmethod
    def _topic(cls, topic: str) -> str:
        if not _TOPIC_NAME.fullmatch(topic) or topic in {".", ".."}:
            raise ValueError("topic must be 1-249 characters of letters, digits, '.', '_', '-'")
        return topic

    @field_validator("compression")
    @classmethod
    def _codec(cls, compression: Compression) -> Compression:
        if compression != "none" and not codec_installed(compression):
            raise ValueError(f"the {compression} codec is not installed (cramjam provides it)")
        return compression

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSinkConfig:
        if self.enable_idempotence and self.acks != "all":
            raise ValueError("enable_idempotence needs acks = 'all'")
        if self.delivery_timeout_ms < self.request_timeout_ms + self.linger_ms:
            raise ValueError("delivery_timeout_ms must be >= request_timeout_ms + linger_ms")
        if self.max_batch_bytes > self.max_request_bytes:
            raise ValueError("max_batch_bytes must not exceed max_request_bytes")
        return self

    def producer_options(self) -> dict[str, Any]:
        """The keyword arguments of ``AIOKafkaProducer`` these options describe."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "acks": self.acks,
            "enable_idempotence": self.enable_idempotence,
            "compression_type": None if self.compression == "none" else self.compression,
            "linger_ms": self.linger_ms,
            "max_batch_size": self.max_batch_bytes,
            "max_request_size": self.max_request_bytes,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.tls is not None:
            options["ssl_context"] = self.tls.ssl_context()
        if self.sasl is not None:
            options["security_protocol"] = "SASL_SSL" if self.tls is not None else "SASL_PLAINTEXT"
            options["sasl_mechanism"] = self.sasl.mechanism
            options["sasl_plain_username"] = self.sasl.username
            options["sasl_plain_password"] = self.sasl.secret
        elif self.tls is not None:
            options["security_protocol"] = "SSL"
        return options

    def build(self, name: str, context: SinkContext) -> Sink:
        """Create the Kafka sink; the message key defaults to the host name."""
        from forwarder.sinks.kafka.sink import KafkaSink  # noqa: PLC0415 - aiokafka on use only

        return KafkaSink(name, self, key=self.key or context.host)
