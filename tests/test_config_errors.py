"""msgspec's validation errors become one line: the key path, then what is wrong in TOML's words."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import pytest

from forwarder.config_errors import FieldError, describe, toml_type
from forwarder.options import StrictModel


class Rule(StrictModel, frozen=True, kw_only=True):
    """A table inside an array, with a renamed key and a check of one field."""

    name: str = msgspec.field(name="class")
    mode: Literal["fast", "slow"] = "fast"
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0

    def __post_init__(self) -> None:
        if self.name == "reserved":
            raise FieldError("class", "class 'reserved' is taken")


class Cat(StrictModel, tag_field="kind", tag="cat", frozen=True, kw_only=True):
    """One member of a tagged union."""

    lives: int = 9


class Dog(StrictModel, tag_field="kind", tag="dog", frozen=True, kw_only=True):
    """The other member."""

    good: bool = True


class Table(StrictModel, frozen=True, kw_only=True):
    """A top-level table with arrays, a mapping, an optional table and a union."""

    rules: list[Rule] = msgspec.field(default_factory=list)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    pet: Cat | Dog | None = None
    sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.rules) > 3:
            raise ValueError("at most 3 rules")


def problem(raw: dict[str, Any], where: tuple[str, ...] = ()) -> str:
    """The one line describing why ``raw`` is not a Table."""
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.convert(raw, Table)
    return describe(raised.value, raw, Table, where)


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ({"colour": 1}, "colour: unknown key"),
        ({"rules": [{"class": "a"}, {"klass": "b"}]}, "rules.1.klass: unknown key"),
        ({"rules": [{}]}, "rules.0.class: missing required key"),
        ({"rules": [{"class": "reserved"}]}, "rules.0.class: class 'reserved' is taken"),
        (
            {"rules": [{"class": "a", "mode": "warp"}]},
            "rules.0.mode: invalid value 'warp': use one of 'fast', 'slow'",
        ),
        (
            {"rules": [{"class": "a", "weight": 0}]},
            "rules.0.weight: expected a number > 0.0, got 0",
        ),
        (
            {"rules": [{"class": "a", "weight": "x"}]},
            "rules.0.weight: expected a number, got a string",
        ),
        ({"rules": [{"class": str(n)} for n in range(4)]}, "(top level): at most 3 rules"),
        ({"labels": {"job": 1}}, "labels: expected a string, got an integer"),
        ({"pet": {"kind": "cow"}}, "pet.kind: invalid value 'cow': use one of 'cat', 'dog'"),
        ({"pet": {}}, "pet.kind: missing required key: use one of 'cat', 'dog'"),
        ({"pet": {"kind": "dog", "lives": 3}}, "pet.lives: unknown key"),
        ({"pet": {"kind": "cat", "lives": True}}, "pet.lives: expected an integer, got a boolean"),
        ({"sizes": [1, "2"]}, "sizes.1: expected an integer, got a string"),
        ({"sizes": 3}, "sizes: expected an array, got an integer"),
    ],
)
def test_each_problem_is_one_line_naming_the_key(raw: dict[str, Any], line: str) -> None:
    """Unknown, missing, out-of-range and mistyped keys in tables, arrays and unions read as key: problem."""
    assert problem(raw) == line


def test_the_path_starts_where_the_table_was_found() -> None:
    """A table converted on its own (a sink's) is named under its place in the file."""
    assert problem({"colour": 1}, ("sinks", "out")) == "sinks.out.colour: unknown key"


@pytest.mark.parametrize(
    ("value", "name"),
    [("x", "a string"), (1, "an integer"), (1.5, "a number"), (True, "a boolean"),
     ({}, "a table"), ([], "an array"), (b"", "bytes")],
)  # fmt: skip
def test_toml_type_names_what_the_file_gave(value: object, name: str) -> None:
    """Messages call values by their TOML names; anything else by its Python type."""
    assert toml_type(value) == name
