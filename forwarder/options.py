"""Building blocks shared by every config table: strictness, the types TOML lacks, TLS, secrets.

Config tables are msgspec ``Struct`` s (https://jcristharif.com/msgspec/structs.html):
frozen, unknown keys rejected. Values TOML cannot type (paths, secrets, levels given as
names or numbers, comma-separated lists) are small types that :func:`decode_hook` builds
while msgspec converts the parsed TOML, and :func:`encode_hook` turns back into plain
values for ``check``. :func:`parse_table` converts and turns msgspec's error into one
line naming the key path (:mod:`forwarder.config_errors`).

Kept apart from ``config`` so that sink modules can declare their own config tables
without importing the whole configuration (which imports them).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

import msgspec

from forwarder.config_errors import describe, toml_type
from forwarder.errors import ConfigError
from forwarder.source.parser import parse_level

T = TypeVar("T")

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]


class StrictModel(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every config table: frozen, unknown keys rejected, keyword-only.

    Subclasses repeat ``frozen=True, kw_only=True``: msgspec inherits them, but type checkers
    read each class's own options (PEP 681).
    """


class Secret:
    """A password or token: shown as ``***`` (repr, ``check``), read with :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def from_config(cls, value: object) -> Self:
        """The secret a config string holds (``${ENV}`` already expanded)."""
        return cls(_string(value, "a string"))

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Level(int):
    """A syslog level: a name (``"warning"``) or a number (0..7) in the config, a number after."""

    __slots__ = ()

    @classmethod
    def from_config(cls, value: object) -> Self:
        """The level a config value names; booleans and floats are refused."""
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"expected a level name (e.g. 'warning') or 0..7, got {value!r}")
        return cls(parse_level(value))


class HostPorts(list[str]):
    """``HOST:PORT`` addresses, as a list or one comma-separated string (``"a:9092,b:9092"``)."""

    __slots__ = ()

    @classmethod
    def from_config(cls, value: object) -> Self:
        """The addresses a config value lists; at least one, each with a port 1..65535."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise TypeError(
                f"expected HOST:PORT strings, as an array or separated by commas, got {value!r}"
            )
        if not value:
            raise ValueError("give at least one HOST:PORT")
        for address in value:
            check_host_port(address)
        return cls(value)


def check_host_port(address: str) -> None:
    """Raise ValueError unless ``address`` is ``HOST:PORT`` with a port 1..65535."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} must be HOST:PORT with a port 1..65535")


def parse_table(raw: Any, kind: type[T], where: tuple[str, ...] = ()) -> T:
    """``raw`` (parsed TOML found at key path ``where``) as ``kind``, or one ConfigError line."""
    try:
        return msgspec.convert(raw, kind, dec_hook=decode_hook)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid config: {describe(error, raw, kind, where)}") from error


def decode_hook(kind: type, value: object) -> object:
    """Build the values of the types msgspec leaves to us (``dec_hook``)."""
    if kind is Path:
        return value if isinstance(value, Path) else Path(_string(value, "a path"))
    from_config = getattr(kind, "from_config", None)
    if from_config is None:
        raise NotImplementedError(f"no config decoder for {kind.__name__}")
    return from_config(value)


def encode_hook(value: object) -> object:
    """Plain values for :func:`decode_hook`'s types (``enc_hook``): secrets stay masked."""
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, list):
        return list(value)
    raise NotImplementedError(f"no config encoder for {type(value).__name__}")


def as_builtins(table: msgspec.Struct) -> dict[str, Any]:
    """A config table as plain JSON-ready values (secrets masked), for ``check``."""
    builtins: dict[str, Any] = msgspec.to_builtins(table, enc_hook=encode_hook)
    return builtins


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected {what}, got {toml_type(value)}")
    return value


class BatchConfig(StrictModel, frozen=True, kw_only=True):
    """``[batch]`` (or ``[sinks.NAME.batch]``): how records are grouped per send."""

    max_records: PositiveInt = 500
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_048_576
    linger_ms: NonNegativeInt = 200
    max_in_flight: PositiveInt = 2


class TlsConfig(StrictModel, frozen=True, kw_only=True):
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


def read_secret(value: Secret | None, path: Path | None, what: str) -> str | None:
    """Return a secret given inline (``${ENV}`` already expanded) or in a file, or None."""
    if value is not None and path is not None:
        raise ValueError(f"give {what} or {what}_file, not both")
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"cannot read {what}_file {path}: {error.strerror}") from error
    return value.reveal() if value is not None else None
