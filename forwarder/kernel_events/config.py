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
from typing import Annotated

import msgspec

from forwarder.config_errors import FieldError
from forwarder.kernel_events.catalogue import CLASSES
from forwarder.kernel_events.report import QUIET_USEC
from forwarder.kernel_events.rules import UserRule
from forwarder.options import StrictModel
from forwarder.source.parser import FACILITY_NAMES, parse_level

ANY_FACILITY = "any"
IDLE_FLUSH_S = QUIET_USEC / 1_000_000


class UserRuleConfig(StrictModel, frozen=True, kw_only=True):
    """``[[kernel_events.rules]]``: one record whose text the regex finds is one event."""

    class_name: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")] = msgspec.field(
        name="class"
    )
    regex: str
    max_level: str | int = "debug"
    facility: str = "kern"

    def __post_init__(self) -> None:
        if self.class_name in CLASSES:
            raise FieldError(
                "class", f"class {self.class_name!r} is built in: give the rule a name of its own"
            )
        try:
            re.compile(self.regex)
        except re.error as error:
            raise FieldError("regex", f"invalid regex {self.regex!r}: {error}") from None
        try:
            parse_level(self.max_level)
        except ValueError as error:
            raise FieldError("max_level", str(error)) from None
        if self.facility != ANY_FACILITY and self.facility not in FACILITY_NAMES:
            raise FieldError(
                "facility",
                f"unknown facility {self.facility!r}: use one of {', '.join(FACILITY_NAMES)}",
            )

    def compile(self) -> UserRule:
        """The rule the classifier runs."""
        facility = None if self.facility == ANY_FACILITY else FACILITY_NAMES.index(self.facility)
        return UserRule(
            class_name=self.class_name,
            pattern=re.compile(self.regex),
            facility_code=facility,
            max_level_code=parse_level(self.max_level),
        )


class KernelEventsConfig(StrictModel, frozen=True, kw_only=True):
    """``[kernel_events]``."""

    enabled: bool = True
    disabled_classes: tuple[str, ...] = ()
    idle_flush_s: Annotated[float, msgspec.Meta(ge=IDLE_FLUSH_S)] = IDLE_FLUSH_S
    rules: tuple[UserRuleConfig, ...] = ()

    def __post_init__(self) -> None:
        if unknown := sorted(set(self.disabled_classes) - set(CLASSES)):
            raise FieldError(
                "disabled_classes", f"unknown classes {unknown}: use some of {', '.join(CLASSES)}"
            )

    def compiled_rules(self) -> tuple[UserRule, ...]:
        """Every user rule, compiled."""
        return tuple(rule.compile() for rule in self.rules)
