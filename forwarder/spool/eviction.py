"""Freeing the spool: evict the oldest segment when full, delete what every sink delivered.

Eviction (``drop_oldest``) records the evicted range in ``evicted.json`` BEFORE the unlink,
so a reader inside it always learns its exact ``spool_full`` hole, even after a crash
between the two (recovery deletes the leftover). Reclaiming is derived from the sinks'
checkpoints alone: a crash between a checkpoint save and an unlink leaves a file that the
next release deletes (SPOOL.md, "Reclamation": Vector's #25570 avoided by construction).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import structlog

from forwarder.spool.format import HEADER_SIZE, decode_frames
from forwarder.spool.segments import EVICTED_FILE, Boot, Segment
from forwarder.spool.writer import SpoolStats

log = structlog.get_logger("forwarder.spool")


def evict(
    boot: Boot, segment: Segment, *, is_current: bool, released: int, stats: SpoolStats
) -> None:
    """Drop ``boot``'s oldest segment; its range joins the boot's ``spool_full`` hole.

    ``released``: every sink has delivered this boot up to that seq (what is lost counts
    only records above it). Raises OSError if ``evicted.json`` or the unlink failed; the
    segment is gone from the spool's view either way.
    """
    later = boot.segments[1:]
    last = segment.last_seq
    if later:
        last = later[0].first_seq - 1
    elif is_current and boot.tail_seq is not None:
        last = boot.tail_seq
    if last is None:  # an old boot's only segment, never scanned
        last = _scan_last(segment)
    first = boot.evicted[0] if boot.evicted is not None else segment.first_seq
    if last >= first:
        boot.evicted = (first, max(last, boot.evicted[1] if boot.evicted else last))
    lost = max(0, last - max(released, segment.first_seq - 1))
    stats.evicted_records += lost
    if lost:
        log.warning(
            "spool_evicted",
            boot_id=boot.boot_id,
            first_seq=segment.first_seq,
            last_seq=last,
            undelivered=lost,
        )
    try:
        boot.save_evicted()
        segment.path.unlink()
    finally:
        boot.segments.remove(segment)


def evict_record(boot: Boot, seq: int, stats: SpoolStats) -> None:
    """A record larger than the whole spool joins the ``spool_full`` hole (raises OSError)."""
    first = boot.evicted[0] if boot.evicted is not None else seq
    boot.evicted = (first, seq)
    stats.evicted_records += 1
    boot.save_evicted()


def lowest_delivered(boots: list[Boot], positions: Iterable[tuple[str, int]]) -> tuple[int, int]:
    """(index of the oldest boot some sink still needs, the seq every sink delivered in it).

    A position in a boot the spool does not hold reads from the oldest boot on, so it keeps
    everything: (0, -1). (-1, -1) when there is no boot or no position.
    """
    order = {boot.boot_id: index for index, boot in enumerate(boots)}
    lowest = len(boots) - 1
    delivered: dict[int, int] = {}
    for boot_id, seq in positions:
        index, at = (order[boot_id], seq) if boot_id in order else (0, -1)
        lowest = min(lowest, index)
        delivered[index] = min(delivered.get(index, at), at)
    if lowest < 0 or lowest not in delivered:
        return -1, -1
    return lowest, delivered[lowest]


def reclaim(boot: Boot, delivered: int, *, active: Segment | None, is_current: bool) -> None:
    """Delete ``boot``'s leading segments that every sink delivered (never the active one)."""
    while len(boot.segments) > 1 or (boot.segments and not is_current):
        segment = boot.segments[0]
        if segment is active:
            return
        later = boot.segments[1:]
        bound = later[0].first_seq - 1 if later else segment.last_seq
        if bound is None or bound > delivered:
            return
        try:
            segment.path.unlink()
        except OSError as error:
            log.warning("spool_unlink_failed", segment=str(segment.path), error=error.strerror)
            return
        boot.segments.pop(0)


def delete_boot(boot: Boot) -> None:
    """Remove a boot every sink has left behind: its segments, marker and directory."""
    for segment in list(boot.segments):
        with contextlib.suppress(OSError):
            segment.path.unlink()
    with contextlib.suppress(OSError):
        (boot.directory / EVICTED_FILE).unlink()
    with contextlib.suppress(OSError):
        boot.directory.rmdir()


def _scan_last(segment: Segment) -> int:
    try:
        data = segment.path.read_bytes()
    except OSError:
        return segment.first_seq
    frames, _, _ = decode_frames(data, HEADER_SIZE, segment.first_seq - 1)
    return frames[-1].seq if frames else segment.first_seq
