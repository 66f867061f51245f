"""``[spool]``: the durable disk spool in front of every sink (README "Spool")."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from forwarder.options import StrictModel
from forwarder.source.parser import parse_level
from forwarder.spool.format import HEADER_SIZE

MIB = 1_048_576
MAX_SEGMENT_BYTES = 8 * MIB
# A segment holds at least a header and an ordinary record or two, whatever max_bytes says.
MIN_SEGMENT_BYTES = HEADER_SIZE + 128


class SpoolConfig(StrictModel):
    """``[spool]``: where, how large, how durable, and what happens when full."""

    enabled: bool = True
    path: Path | None = None  # default: <state_dir>/spool
    max_bytes: int = Field(default=256 * MIB, ge=4096)
    segment_bytes: int | None = Field(default=None, ge=MIN_SEGMENT_BYTES)
    fsync: Literal["interval", "always", "never"] = "interval"
    fsync_interval_ms: int = Field(default=1000, ge=1)
    fsync_min_level: int = 2  # crit: a record this severe is fsynced at once (journald's rule)
    when_full: Literal["drop_oldest", "block"] = "drop_oldest"
    memory_bytes: int = Field(default=64 * MIB, ge=0)  # held in memory while the disk fails

    @field_validator("fsync_min_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> int:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return parse_level(value)
        raise ValueError("fsync_min_level must be a level name (e.g. 'crit') or 0..7")

    def effective_segment_bytes(self) -> int:
        """Segment size: an eighth of ``max_bytes`` (at most 8 MiB), never above ``max_bytes``."""
        wanted = self.segment_bytes or min(MAX_SEGMENT_BYTES, self.max_bytes // 8)
        return min(self.max_bytes, max(MIN_SEGMENT_BYTES, wanted))
