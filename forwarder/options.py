"""Building blocks shared by every config model: strictness, TLS and secrets.

Kept apart from ``config`` so that sink modules can declare their own config models
without importing the whole configuration (which imports them).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class StrictModel(BaseModel):
    """Base of every config table: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchConfig(StrictModel):
    """``[batch]`` (or ``[sinks.NAME.batch]``): how records are grouped per send."""

    max_records: int = Field(default=500, ge=1)
    max_bytes: int = Field(default=1_048_576, ge=1024)
    linger_ms: int = Field(default=200, ge=0)
    max_in_flight: int = Field(default=2, ge=1)


class TlsConfig(StrictModel):
    """TLS options shared by the network sinks."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: bool = True

    def ssl_context(self) -> ssl.SSLContext:
        """Build the client SSL context these options describe."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file is not None:
            context.load_cert_chain(
                str(self.cert_file), str(self.key_file) if self.key_file else None
            )
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def read_secret(value: SecretStr | None, path: Path | None, what: str) -> str | None:
    """Return a secret given inline (``${ENV}`` already expanded) or in a file, or None."""
    if value is not None and path is not None:
        raise ValueError(f"give {what} or {what}_file, not both")
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"cannot read {what}_file {path}: {error.strerror}") from error
    return value.get_secret_value() if value is not None else None
