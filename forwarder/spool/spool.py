"""The durable spool: one shared append-only log of raw kmsg records, per boot.

The reader appends every record once (:meth:`Spool.append`); each sink reads at its own
position with a :class:`~forwarder.spool.reader.SpoolReader` (its checkpoint is the cursor).
Design and prior art: ``SPOOL.md``; guarantees per crash point: README "Spool". This class
ties the parts together, each in its own module:

- **Start-up** (``recovery``): never raises on spool contents and never loops; a bad header
  is quarantined (``*.seg.bad``, an exact ``spool_corrupt`` hole), a torn tail truncated.
- **Writing** (``writer``, ``syncer``): one active segment; ``fsync = "interval"`` syncs at
  most every ``fsync_interval_ms`` and at once after a record at ``fsync_min_level`` or worse,
  both in the syncer thread; ``"always"`` after every append, before it returns; ``"never"``
  only when a segment is sealed or closed.
- **Bound** (``bounded``, ``eviction``): the files never exceed ``max_bytes``; ``drop_oldest``
  evicts whole segments, oldest boot first, each range recorded before the unlink (exact
  ``spool_full`` gaps); ``block`` refuses records until :meth:`Spool.release` frees delivered
  segments.
- **Degraded** (``memory``): a failed write (ENOSPC, EIO) keeps records in memory, bounded,
  and retries with backoff; beyond that :meth:`append` refuses. Never exits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import structlog

from forwarder.spool import eviction
from forwarder.spool.bounded import BoundedWriter
from forwarder.spool.config import SpoolConfig
from forwarder.spool.memory import MemoryHold
from forwarder.spool.recovery import recover_boot
from forwarder.spool.segments import Boot, Segment, boot_directory_name, fsync_directory
from forwarder.spool.writer import SegmentWriter, SpoolStats

log = structlog.get_logger("forwarder.spool")
__all__ = ["Spool", "SpoolStats"]


class Spool:
    """The spool of one forwarder (see the module docstring)."""

    def __init__(
        self,
        config: SpoolConfig,
        directory: Path,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        time_ns: Callable[[], int] = time.time_ns,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        """``fsync`` syncs the active segment's data (a seam: the header's stays ``os.fsync``)."""
        self.config = config
        self.directory = directory
        self.segment_bytes = config.effective_segment_bytes()
        self.stats = SpoolStats()
        self.boots: list[Boot] = []  # oldest first; the current boot is last
        self.current: Boot | None = None
        self._time_ns = time_ns
        self._writer = SegmentWriter(config, self.stats, monotonic, fsync)
        self._memory = MemoryHold(config.memory_bytes, monotonic)
        self._bounded = BoundedWriter(
            config,
            self.boots,
            self._writer,
            self._memory,
            current=self._current,
            degrade=self._degrade,
            stats=self.stats,
        )

    # -- start-up -------------------------------------------------------------------

    def open(self, boot_id: str, clock_offset_ns: int) -> None:
        """Recover what is on disk and get ready to append records of ``boot_id``."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            entries = sorted(self.directory.iterdir())
        except OSError as error:
            self._degrade(error)
            entries = []
        for entry in entries:
            if not entry.is_dir():
                continue
            try:
                boot = recover_boot(entry, self.stats, self.quarantine)
            except Exception as error:  # a bug or a hostile file must never stop start-up
                log.exception("spool_boot_unreadable", directory=str(entry), error=str(error))
                continue
            if boot is not None:
                self.boots.append(boot)
        self.boots.sort(key=lambda boot: boot.created_ns)
        current = self.boot(boot_id)
        if current is None:
            directory = self.directory / boot_directory_name(boot_id)
            current = Boot(boot_id, directory, clock_offset_ns, self._time_ns())
        else:
            self.boots.remove(current)
        self.boots.append(current)
        self.current = current
        log.debug(
            "spool_opened",
            path=str(self.directory),
            bytes=self.total_bytes(),
            boots=len(self.boots),
            tail_seq=current.tail_seq,
        )

    def quarantine(self, segment: Segment, reason: str) -> None:
        """Rename a damaged segment ``*.bad``: its range becomes a ``spool_corrupt`` hole."""
        if segment.bad:
            return
        if segment is self._writer.active:
            self._writer.abandon()
        segment.bad = True
        self.stats.corrupt_segments += 1
        target = segment.path.with_name(segment.path.name + ".bad")
        try:
            segment.path.rename(target)
            segment.path = target
            fsync_directory(target.parent)
        except OSError as error:
            log.warning("spool_quarantine_failed", segment=str(segment.path), error=error.strerror)
        log.warning(
            "spool_segment_quarantined",
            segment=str(segment.path),
            first_seq=segment.first_seq,
            reason=reason,
        )

    # -- queries --------------------------------------------------------------------

    def boot(self, boot_id: str) -> Boot | None:
        """The spool's boot of that id, if it holds one."""
        for boot in self.boots:
            if boot.boot_id == boot_id:
                return boot
        return None

    def clock_offset_ns(self, boot_id: str) -> int | None:
        """The clock offset stored with the boot's segments (same timestamps after restart)."""
        boot = self.boot(boot_id)
        return boot.clock_offset_ns if boot is not None and boot.segments else None

    def total_bytes(self) -> int:
        """Bytes of every segment file, quarantined ones included (what max_bytes bounds)."""
        return self._bounded.total_bytes()

    @property
    def unwritable(self) -> str | None:
        """Why the disk refuses writes (degraded), while it does."""
        return self._memory.unwritable

    def record_bytes_pending(self) -> int:
        """Bytes held in memory while the disk refuses writes."""
        return self._memory.bytes

    def pending_after(self, seq: int) -> list[tuple[int, bytes]]:
        """Records held in memory (degraded) above ``seq``."""
        return self._memory.after(seq)

    # -- writing --------------------------------------------------------------------

    def append(self, seqs: Sequence[int], raws: Sequence[bytes], *, urgent: bool = False) -> int:
        """Append records of the current boot; returns how many leading ones were taken.

        Records at or below the boot's tail are taken without a write (I2: idempotent by
        seq). Fewer than all are taken only when full in ``block`` mode, or when the disk
        fails and memory is full too: the caller keeps the rest and offers them again.
        ``urgent``: a record at ``fsync_min_level`` or worse is among them (the caller reads
        the levels, ``appender``): with ``fsync = "interval"`` they are synced at once.
        """
        boot = self.current
        assert boot is not None, "open() first"
        start = 0
        tail = boot.tail_seq
        if tail is not None:
            while start < len(seqs) and seqs[start] <= tail:
                start += 1
        if start == len(seqs):
            return start
        new_seqs = seqs[start:] if start else seqs
        new_raws = raws[start:] if start else raws
        if self._memory.degraded:
            self._retry_held()
        if self._memory.degraded:
            taken = self._memory.hold(new_seqs, new_raws)
        else:
            taken = self._bounded.write(new_seqs, new_raws)
        if taken:
            boot.tail_seq = new_seqs[taken - 1]
            self.stats.appended_records += taken
        self._sync_if_due(urgent=urgent)
        return start + taken

    def _current(self) -> Boot:
        assert self.current is not None, "open() first"
        return self.current

    def _sync_if_due(self, *, urgent: bool) -> None:
        try:
            self._writer.sync_if_due(urgent=urgent)
        except OSError as error:
            self._degrade(error)
        self._take_sync_errors()

    def _take_sync_errors(self) -> None:
        """An fsync that failed in the syncer thread degrades the spool here, on this thread."""
        for error in self._writer.take_errors():
            self._degrade(error)

    def tick(self) -> None:
        """Call about every second: the interval fsync, and retries of a failed disk."""
        if self._memory.degraded:
            self._retry_held()
        self._sync_if_due(urgent=False)

    def sync(self) -> None:
        """Sync what was written, here, after a running fsync (on drain; never raises)."""
        self._take_sync_errors()
        try:
            self._writer.fsync()
        except OSError as error:
            self._degrade(error)

    def close(self) -> None:
        """Sync and close the active segment; stop the syncer thread (never raises)."""
        try:
            self._writer.close()
        except OSError as error:
            self._degrade(error)
        self._take_sync_errors()  # the thread has ended: none can come later

    # -- bound ----------------------------------------------------------------------

    def release(self, positions: Iterable[tuple[str, int]]) -> None:
        """Delete what every sink has delivered (``positions``: each sink's checkpoint)."""
        lowest, delivered = eviction.lowest_delivered(self.boots, positions)
        if lowest < 0:
            return
        keep = self.boots[lowest]
        for boot in self.boots[:lowest]:
            eviction.delete_boot(boot)
            self.boots.remove(boot)
        self._bounded.released[keep.boot_id] = delivered
        eviction.reclaim(
            keep, delivered, active=self._writer.active, is_current=keep is self.current
        )

    # -- degraded: the disk refuses writes ------------------------------------------

    def _degrade(self, error: OSError) -> None:
        self.stats.write_errors += 1
        self._memory.failed(error)

    def _retry_held(self) -> None:
        """Offer the records held in memory to the disk again, once the backoff has passed."""
        held = self._memory.take_if_due()
        if held is None:
            return
        seqs = [seq for seq, _ in held]
        raws = [raw for _, raw in held]
        written = self._bounded.write(seqs, raws)
        if written < len(held) and not self._memory.records:
            self._memory.hold(seqs[written:], raws[written:])  # block mode and full: keep them
        if self._memory.unwritable is None:
            self._memory.recovered()
