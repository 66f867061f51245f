"""Which sinks start on the live path and which from the spool (README "Spool", "Reading")."""

from __future__ import annotations

from dataclasses import dataclass, field

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.spool.reader import SpoolReader
from forwarder.spool.spool import Spool


@dataclass(slots=True)
class StartPlan:
    """Each sink's start: live (from its checkpoint) or lagging (from a spool position)."""

    live: dict[str, Checkpoint | None] = field(default_factory=dict)
    # per lagging sink: (boot_id, seq) to read the spool after, and its checkpoint's updated_at
    lagging: dict[str, tuple[tuple[str, int], str]] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)  # sinks with no position yet
    starts: dict[str, tuple[str, int]] = field(default_factory=dict)  # new positions to save
    queued: dict[str, tuple[str, int]] = field(default_factory=dict)  # live sinks' positions
    # per lagging sink: the spool's newest seq of the current boot (-1: none); the live path
    # makes its kernel events above it, its catch-up those of what the spool held before
    spooled_through: dict[str, int] = field(default_factory=dict)


def plan_start(spool: Spool, checkpoints: dict[str, Checkpoint | None], start_at: str) -> StartPlan:
    """Sinks the spool holds more for start lagging; the others start live.

    A sink whose position is the end of an older boot the spool holds also starts lagging:
    its catch-up closes the reports still open at that boot's end, then the reboot gap.

    A new sink starting at the oldest record while the spool holds records gets a start
    position to persist at once: a restart before it delivers anything resumes there.
    """
    plan = StartPlan()
    tail = spool.current.tail_seq if spool.current is not None else None
    for name, checkpoint in checkpoints.items():
        position = None if checkpoint is None else (checkpoint.boot_id, checkpoint.seq)
        if position is None and start_at == "oldest":
            oldest = next((b for b in spool.boots if b.oldest_seq() is not None), None)
            if oldest is not None:
                first = oldest.oldest_seq()
                assert first is not None
                position = (oldest.boot_id, first - 1)
                plan.starts[name] = position  # saved by its worker once running
        if position is None:
            plan.fresh.add(name)
            plan.live[name] = checkpoint
        elif SpoolReader(spool, *position).read(1) or _ended_boot(spool, position[0]):
            updated_at = checkpoint.updated_at if checkpoint is not None else ""
            plan.lagging[name] = (position, updated_at)
            plan.spooled_through[name] = -1 if tail is None else tail
        else:
            plan.live[name] = checkpoint
            plan.queued[name] = position
    return plan


def _ended_boot(spool: Spool, boot_id: str) -> bool:
    """True for an older boot the spool still holds records of: its catch-up closes its end."""
    current = spool.current
    return (current is None or boot_id != current.boot_id) and (
        spool.clock_offset_ns(boot_id) is not None
    )
