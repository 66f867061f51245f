"""Writing records into the current boot's segments without ever exceeding ``max_bytes``.

A chunk of records becomes one block when it fits the active segment (the common case);
otherwise it is cut at segment boundaries, rolling to a new segment when the active one is
full, and room is made first: ``drop_oldest`` evicts whole segments, oldest boot first
(``eviction``: each range recorded before the unlink), ``block`` stops and says how many
records were written. A record larger than the whole spool can only be evicted itself. A
write that fails (ENOSPC, EIO) hands the rest to degraded mode (``memory``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate

from forwarder.spool import eviction
from forwarder.spool.config import SpoolConfig
from forwarder.spool.format import BLOCK_HEAD_SIZE, FRAME_HEAD_SIZE, HEADER_SIZE
from forwarder.spool.memory import MemoryHold
from forwarder.spool.segments import Boot, Segment
from forwarder.spool.writer import SegmentWriter, SpoolStats


class BoundedWriter:
    """Writes, rolls and evicts for the spool; ``boots`` is the spool's list, shared."""

    def __init__(
        self,
        config: SpoolConfig,
        boots: list[Boot],
        writer: SegmentWriter,
        memory: MemoryHold,
        *,
        current: Callable[[], Boot],
        degrade: Callable[[OSError], None],
        stats: SpoolStats,
    ) -> None:
        self._config = config
        self.segment_bytes = config.effective_segment_bytes()
        self._boots = boots
        self._writer = writer
        self._memory = memory
        self._current = current
        self._degrade = degrade
        self._stats = stats
        self.released: dict[str, int] = {}  # per boot: every sink delivered up to this seq

    def total_bytes(self) -> int:
        """Bytes of every segment file, quarantined ones included (what max_bytes bounds)."""
        return sum(segment.size for boot in self._boots for segment in boot.segments)

    def write(self, seqs: Sequence[int], raws: Sequence[bytes]) -> int:
        """Write records to segments (rolling and evicting as needed); how many were taken.

        Records a failed write leaves are held in memory (degraded) and count as taken.
        """
        writer = self._writer
        if (whole := self._write_whole(seqs, raws)) is not None:
            return whole
        written = 0
        count = len(seqs)
        # Cumulative frame bytes, computed in C: the room check is a bisect, not a loop.
        ends = list(accumulate(map(FRAME_HEAD_SIZE.__add__, map(len, raws))))
        while written < count:
            if writer.active is not None and writer.active.size >= self.segment_bytes:
                self.seal()
            active = writer.active
            used = active.size if active is not None else HEADER_SIZE
            before = ends[written - 1] if written else 0
            room = self.segment_bytes - used - BLOCK_HEAD_SIZE
            end = bisect_right(ends, before + room, written)
            if end == written:  # not even one record fits the active segment: roll
                if active is None or active.size == HEADER_SIZE:
                    # One record larger than the whole spool: it can only be evicted.
                    self._evict_everything_and(seqs[written])
                    written += 1
                    continue
                self.seal()
                continue
            needed = ends[end - 1] - before + BLOCK_HEAD_SIZE
            if active is None:
                needed += HEADER_SIZE
            if not self._make_room(needed):
                return written
            if active is not None and writer.active is None:
                continue  # the active segment itself was evicted: a new one needs a header too
            try:
                if writer.active is None:
                    writer.open_segment(self._current(), seqs[written])
                writer.write_block(seqs[written:end], raws[written:end])
            except OSError as error:
                self._degrade(error)
                return written + self._memory.hold(seqs[written:], raws[written:])
            written = end
        return written

    def seal(self) -> None:
        """Sync and close the active segment (a failure degrades the spool)."""
        try:
            self._writer.seal()
        except OSError as error:
            self._degrade(error)

    def _write_whole(self, seqs: Sequence[int], raws: Sequence[bytes]) -> int | None:
        """The common case, one block that fits the active segment; None if it does not."""
        active = self._writer.active
        if active is None:
            return None
        size = BLOCK_HEAD_SIZE + FRAME_HEAD_SIZE * len(raws) + sum(map(len, raws))
        if (
            active.size + size > self.segment_bytes
            or self.total_bytes() + size > self._config.max_bytes
        ):
            return None
        try:
            self._writer.write_block(seqs, raws)
        except OSError as error:
            self._degrade(error)
            return self._memory.hold(seqs, raws)
        return len(seqs)

    def _make_room(self, needed: int) -> bool:
        """Evict (drop_oldest) until ``needed`` more bytes fit; False if block mode is full."""
        while self.total_bytes() + needed > self._config.max_bytes:
            victim = self._oldest_segment()
            if victim is None:
                return True  # nothing left to evict: an empty spool takes one segment
            if self._config.when_full == "block":
                return False
            self._evict(*victim)
        return True

    def _oldest_segment(self) -> tuple[Boot, Segment] | None:
        for boot in self._boots:
            if boot.segments:
                return boot, boot.segments[0]
        return None

    def _evict(self, boot: Boot, segment: Segment) -> None:
        if segment is self._writer.active:
            self._writer.abandon()
        released = self.released.get(boot.boot_id, -1)
        try:
            eviction.evict(
                boot,
                segment,
                is_current=boot is self._current(),
                released=released,
                stats=self._stats,
            )
        except OSError as error:
            self._degrade(error)

    def _evict_everything_and(self, seq: int) -> None:
        """A record larger than the spool: evict everything, then the record itself."""
        while (victim := self._oldest_segment()) is not None:
            self._evict(*victim)
        try:
            eviction.evict_record(self._current(), seq, self._stats)
        except OSError as error:
            self._degrade(error)
