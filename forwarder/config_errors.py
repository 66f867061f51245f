"""msgspec's validation errors as one line a person can act on: ``key.path: what is wrong``.

msgspec reports the first problem it meets as ``<message> - at `$.sinks.kafka.acks```
(https://jcristharif.com/msgspec/api.html#msgspec.ValidationError; the messages are msgspec's).
We turn the location into our key path (``kernel_events.rules.0.class``), move the key an
unknown/missing-key message names into the path, add the field a ``FieldError`` names,
say what TOML calls each type, add the value given to range errors, and list the allowed
values of a fixed choice (a ``Literal`` or a sink's ``type`` tag, from ``msgspec.inspect``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from msgspec import inspect

_LOCATION: Final = re.compile(r"\[\.\.\.\]|\.([^.\[]+)|\[(\d+)\]")  # [...]: a dict key
_UNKNOWN: Final = re.compile(r"Object contains unknown field `(.+)`")
_MISSING: Final = re.compile(r"Object missing required field `(.+)`")
_INVALID: Final = re.compile(r"Invalid (?:enum )?value (.+)")
_TYPE_NAME: Final = re.compile(r"`([^`]+)`")
_TOML_NAMES: Final = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "object": "a table",
    "array": "an array",
    "null": "nothing",
}
_PYTHON_TO_TOML: Final = {
    bool: "bool", int: "int", float: "float", str: "str", dict: "object", list: "array"
}  # fmt: skip
_NOT_GIVEN: Final = object()


class FieldError(ValueError):
    """Raised by a table's ``__post_init__``: the check of ``field`` failed (its key is named)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


def describe(
    error: msgspec.ValidationError, raw: Any, kind: Any, where: tuple[str, ...] = ()
) -> str:
    """``error`` (converting ``raw`` into ``kind``, found at ``where``) as ``key.path: problem``."""
    message, _, location = str(error).partition(" - at `$")
    found = _LOCATION.findall(location.rstrip("`"))
    parts = [name or index for name, index in found if name or index]
    if unknown := _UNKNOWN.fullmatch(message):
        parts.append(unknown[1])
        problem = "unknown key"
    elif missing := _MISSING.fullmatch(message):
        parts.append(missing[1])
        problem = "missing required key" + _choices(kind, parts)
    elif invalid := _INVALID.fullmatch(message):
        problem = f"invalid value {invalid[1]}" + _choices(kind, parts)
    elif message.startswith("Expected `"):
        problem = "expected " + _TYPE_NAME.sub(_toml_name, message.removeprefix("Expected "))
        if ", got" not in problem and (given := _given(raw, parts)) is not _NOT_GIVEN:
            problem += f", got {given!r}"
    else:
        if isinstance(error.__cause__, FieldError):
            parts.append(error.__cause__.field)
        problem = message
    return f"{'.'.join((*where, *parts)) or '(top level)'}: {problem}"


def toml_type(value: object) -> str:
    """What TOML calls the type of ``value`` (``a string``, ``a table``...), for messages."""
    name = _PYTHON_TO_TOML.get(type(value), type(value).__name__)
    return _TOML_NAMES.get(name, name)


def _toml_name(match: re.Match[str]) -> str:
    return " or ".join(_TOML_NAMES.get(name, name) for name in match[1].split(" | "))


def _given(raw: Any, parts: Sequence[str]) -> Any:
    """The value the config gave at ``parts``, if the path leads to one."""
    for part in parts:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return _NOT_GIVEN
    return raw


def _choices(kind: Any, parts: Sequence[str]) -> str:
    """``: use one of 'a', 'b'`` when the key at ``parts`` is a fixed choice, else ''."""
    info: inspect.Type | None = inspect.type_info(kind)
    for part in parts:
        info = _child(info, part) if info is not None else None
    values = _literals(info) if info is not None else []
    return f": use one of {', '.join(map(repr, values))}" if values else ""


def _child(info: inspect.Type, part: str) -> inspect.Type | None:
    """The type of key ``part`` inside a value of type ``info``."""
    if isinstance(info, inspect.Metadata):
        return _child(info.type, part)
    if isinstance(info, inspect.UnionType):
        structs = [member for member in info.types if isinstance(member, inspect.StructType)]
        if structs and part == structs[0].tag_field:
            return inspect.LiteralType(values=tuple(member.tag for member in structs))
        children = (_child(member, part) for member in info.types)
        return next((child for child in children if child is not None), None)
    if isinstance(info, inspect.StructType):
        return next((field.type for field in info.fields if field.encode_name == part), None)
    # msgspec's locations name array items by index and leave dict keys out
    if isinstance(info, inspect.ListType | inspect.VarTupleType) and part.isdigit():
        return info.item_type
    return None


def _literals(info: inspect.Type) -> list[Any]:
    if isinstance(info, inspect.Metadata):
        return _literals(info.type)
    if isinstance(info, inspect.LiteralType):
        return list(info.values)
    if isinstance(info, inspect.UnionType):
        return [value for member in info.types for value in _literals(member)]
    return []
