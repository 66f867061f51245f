"""``[spool]``: the durable disk spool in front of every sink (README "Spool").

A msgspec table like every other (``forwarder.options``): frozen, unknown keys rejected,
bounds declared with ``msgspec.Meta``, cross-field checks in ``__post_init__``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from forwarder.config_errors import FieldError
from forwarder.options import Level, StrictModel
from forwarder.spool.format import HEADER_SIZE

MIB = 1_048_576
MAX_SEGMENT_BYTES = 8 * MIB
# A segment holds at least a header and an ordinary record or two, whatever max_bytes says.
MIN_SEGMENT_BYTES = HEADER_SIZE + 128
MIN_MAX_BYTES = 4096


class SpoolConfig(StrictModel, frozen=True, kw_only=True):
    """``[spool]``: where, how large, how durable, and what happens when full."""

    enabled: bool = True
    path: Path | None = None  # default: <state_dir>/spool
    max_bytes: Annotated[int, msgspec.Meta(ge=MIN_MAX_BYTES)] = 256 * MIB
    segment_bytes: Annotated[int, msgspec.Meta(ge=MIN_SEGMENT_BYTES)] | None = None
    fsync: Literal["interval", "always", "never"] = "interval"
    fsync_interval_ms: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # crit: a record this severe is fsynced at once (journald's rule)
    fsync_min_level: Level = Level(2)
    when_full: Literal["drop_oldest", "block"] = "drop_oldest"
    # held in memory while the disk fails
    memory_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * MIB

    def __post_init__(self) -> None:
        if self.segment_bytes is not None and self.segment_bytes > self.max_bytes:
            raise FieldError(
                "segment_bytes",
                f"{self.segment_bytes} is larger than max_bytes ({self.max_bytes})",
            )

    def effective_segment_bytes(self) -> int:
        """Segment size: an eighth of ``max_bytes`` (at most 8 MiB), never above ``max_bytes``."""
        wanted = self.segment_bytes or min(MAX_SEGMENT_BYTES, self.max_bytes // 8)
        return min(self.max_bytes, max(MIN_SEGMENT_BYTES, wanted))
