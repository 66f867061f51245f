"""The types TOML lacks: secrets stay masked, levels and server lists take both forms, paths decode."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from forwarder.errors import ConfigError
from forwarder.options import (
    HostPorts,
    Level,
    Secret,
    StrictModel,
    as_builtins,
    decode_hook,
    encode_hook,
    parse_table,
)


class Options(StrictModel, frozen=True, kw_only=True):
    """A table with one field of each hook type."""

    token: Secret | None = None
    level: Level = Level(7)
    servers: HostPorts = msgspec.field(default_factory=lambda: HostPorts(["a:1"]))
    path: Path | None = None


def test_a_secret_is_masked_everywhere_but_reveal() -> None:
    """Repr and check's output show ***; reveal() gives the value; equal secrets compare equal."""
    options = parse_table({"token": "hunter2"}, Options)
    assert options.token is not None
    assert "hunter2" not in repr(options)
    assert as_builtins(options)["token"] == "***"
    assert options.token.reveal() == "hunter2"
    assert options.token == Secret("hunter2") != Secret("other")
    assert len({Secret("a"), Secret("a")}) == 1


@pytest.mark.parametrize(("value", "level"), [("crit", 2), (0, 0), ("7", 7)])
def test_a_level_is_a_name_or_a_number_and_prints_as_a_number(value: object, level: int) -> None:
    """Level names and 0..7 decode to the number, which check prints as a plain integer."""
    options = parse_table({"level": value}, Options)
    assert options.level == level
    assert as_builtins(options)["level"] == level


@pytest.mark.parametrize(
    ("value", "servers"),
    [("a:1, b:2,", ["a:1", "b:2"]), (["a:1"], ["a:1"]), ("[::1]:9092", ["[::1]:9092"])],
)
def test_servers_are_an_array_or_one_comma_separated_string(
    value: object, servers: list[str]
) -> None:
    """bootstrap_servers-style lists accept both forms and print as an array."""
    options = parse_table({"servers": value}, Options)
    assert options.servers == servers
    assert as_builtins(options)["servers"] == servers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"servers": ""}, "servers: give at least one HOST:PORT"),
        ({"servers": [1]}, "servers: expected HOST:PORT strings"),
        ({"servers": "a:0"}, "servers: 'a:0' must be HOST:PORT with a port 1..65535"),
        ({"token": 5}, "token: expected a string, got an integer"),
        ({"path": ["/x"]}, "path: expected a path, got an array"),
    ],
)
def test_hook_types_refuse_what_they_cannot_hold(value: dict[str, object], message: str) -> None:
    """A wrong value for a hook type is a config error naming its key."""
    with pytest.raises(ConfigError, match=f"^invalid config: {message}"):
        parse_table(value, Options)


def test_paths_decode_from_strings_and_encode_back() -> None:
    """A path string becomes a Path (a Path is kept) and prints as the string."""
    assert parse_table({"path": "/var/x"}, Options).path == Path("/var/x")
    assert parse_table({"path": Path("/var/y")}, Options).path == Path("/var/y")
    assert as_builtins(Options(path=Path("/var/z")))["path"] == "/var/z"


def test_hooks_refuse_types_they_do_not_know() -> None:
    """A type without a decoder or encoder is a programming error, not a silent pass."""
    with pytest.raises(NotImplementedError):
        decode_hook(complex, 1)
    with pytest.raises(NotImplementedError):
        encode_hook(object())
