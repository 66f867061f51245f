"""User rules: one record, one regex, named groups become fields.

A rule fires on a record of its facility (kern unless configured otherwise: only the
kernel can write kern, SPEC.md 1.2a) at or above its level, whose unescaped text the
regex finds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from forwarder.kernel_events.values import Fields
from forwarder.source.parser import Record


@dataclass(frozen=True, slots=True)
class UserRule:
    """A compiled user rule; ``facility_code`` None means any facility."""

    class_name: str
    pattern: re.Pattern[str]
    facility_code: int | None = 0
    max_level_code: int = 7

    def match(self, record: Record) -> Fields | None:
        """The fields of ``record`` under this rule, or None when it does not fire."""
        if self.facility_code is not None and record.facility_code != self.facility_code:
            return None
        if record.level_code > self.max_level_code:
            return None
        found = self.pattern.search(record.message)
        if found is None:
            return None
        return {name: value for name, value in found.groupdict().items() if value is not None}
