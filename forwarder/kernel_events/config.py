r"""``[kernel_events]``: on by default, classes can be turned off, user rules of one record.

Example::

    [kernel_events]
    enabled = true
    disabled_classes = ["link_state", "usb_device"]
    idle_flush_s = 2.0        # live source: flush an open report after this long with no record

    [[kernel_events.rules]]
    class = "nfs_timeout"
    regex = 'nfs: server (?P<server>\S+) not responding'
    max_level = "warning"     # records at warning or more severe
    facility = "kern"         # the default; "any" for every facility

Regexes are compiled here, so ``check`` reports a broken one with its rule's path.
"""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, field_validator

from forwarder.kernel_events.catalogue import CLASSES
from forwarder.kernel_events.report import QUIET_USEC
from forwarder.kernel_events.rules import UserRule
from forwarder.options import StrictModel
from forwarder.source.parser import FACILITY_NAMES, parse_level

ANY_FACILITY = "any"
IDLE_FLUSH_S = QUIET_USEC / 1_000_000


class UserRuleConfig(StrictModel):
    """``[[kernel_events.rules]]``: one record whose text the regex finds is one event."""

    # ``check`` prints the key a user writes: class, not class_name.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    class_name: str = Field(alias="class", pattern=r"^[a-z][a-z0-9_]{0,63}$")
    regex: str
    max_level: str | int = "debug"
    facility: str = "kern"

    @field_validator("class_name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in CLASSES:
            raise ValueError(f"class {value!r} is built in: give the rule a name of its own")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"invalid regex {value!r}: {error}") from error
        return value

    @field_validator("max_level")
    @classmethod
    def _level(cls, value: str | int) -> str | int:
        parse_level(value)
        return value

    @field_validator("facility")
    @classmethod
    def _facility(cls, value: str) -> str:
        if value != ANY_FACILITY and value not in FACILITY_NAMES:
            raise ValueError(f"unknown facility {value!r}: use one of {', '.join(FACILITY_NAMES)}")
        return value

    def compile(self) -> UserRule:
        """The rule the classifier runs."""
        facility = None if self.facility == ANY_FACILITY else FACILITY_NAMES.index(self.facility)
        return UserRule(
            class_name=self.class_name,
            pattern=re.compile(self.regex),
            facility_code=facility,
            max_level_code=parse_level(self.max_level),
        )


class KernelEventsConfig(StrictModel):
    """``[kernel_events]``."""

    enabled: bool = True
    disabled_classes: tuple[str, ...] = ()
    idle_flush_s: float = Field(default=IDLE_FLUSH_S, ge=IDLE_FLUSH_S)
    rules: tuple[UserRuleConfig, ...] = ()

    @field_validator("disabled_classes")
    @classmethod
    def _known_classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(CLASSES))
        if unknown:
            raise ValueError(f"unknown classes {unknown}: use some of {', '.join(CLASSES)}")
        return value

    def compiled_rules(self) -> tuple[UserRule, ...]:
        """Every user rule, compiled."""
        return tuple(rule.compile() for rule in self.rules)
