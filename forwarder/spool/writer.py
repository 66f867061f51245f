"""The spool's one open segment: create it durably, append blocks, fsync by policy, seal.

A new segment is its header, fsynced, and its directory fsynced, before any record goes in
(README "Spool": a crash never leaves a segment that lies about its boot or first seq). A
block either lands whole or the file is cut back to where it was, so a failed write never
leaves garbage for a reader. Errors are raised (``OSError``): the spool decides what a
failing disk means (degraded mode, ``forwarder.spool.memory``).

Which thread syncs: ``fsync = "interval"`` requests its fsyncs (due, or after an urgent
record) from the :class:`~forwarder.spool.syncer.Syncer` thread and returns at once;
``"always"``, a seal, the drain and shutdown sync on the caller's thread (``"always"`` means
durable when the append returns). Creating a segment (header, directory) stays synchronous.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forwarder.spool.config import SpoolConfig
from forwarder.spool.format import HEADER_SIZE, SegmentHeader, encode_block, encode_header
from forwarder.spool.segments import Boot, Segment, fsync_directory, segment_name
from forwarder.spool.syncer import Syncer

INDEX_EVERY = 256  # records between two entries of a segment's sparse seq index


@dataclass(slots=True)
class SpoolStats:
    """Counters the pipeline exports as metrics."""

    appended_records: int = 0
    evicted_records: int = 0  # dropped by drop_oldest while some sink still needed them
    truncated_bytes: int = 0
    corrupt_segments: int = 0
    write_errors: int = 0
    fsyncs: int = 0
    fsync_seconds: float = 0.0


class SegmentWriter:
    """Appends to the active segment of the current boot (at most one is open)."""

    def __init__(
        self,
        config: SpoolConfig,
        stats: SpoolStats,
        monotonic: Callable[[], float],
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self._config = config
        self._stats = stats
        self._monotonic = monotonic
        self._fd = -1
        self.active: Segment | None = None
        self._dirty = False  # written since the last fsync or request of one
        self._last_sync = monotonic()
        self._syncer = Syncer(stats, fsync)

    def open_segment(self, boot: Boot, first_seq: int) -> None:
        """Create ``boot``'s segment starting at ``first_seq`` and make it the active one."""
        boot.directory.mkdir(parents=True, exist_ok=True)
        if boot.segments and boot.segments[-1].first_seq == first_seq and not boot.segments[-1].bad:
            boot.segments.pop()  # an empty segment (a failed write, a restart) is replaced
        # The last seq on disk before this segment (not boot.tail_seq: that counts records
        # still held in memory): readers learn from it where the previous segment ended.
        previous = [segment.last_seq for segment in boot.segments if not segment.bad]
        prev_last = previous[-1] if previous and previous[-1] is not None else None
        if prev_last is not None and prev_last < 0:
            prev_last = None  # the previous segment was empty and began at seq 0
        header = SegmentHeader(
            boot.boot_id, boot.clock_offset_ns, first_seq, prev_last, boot.created_ns
        )
        path = boot.directory / segment_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            _write_all(fd, encode_header(header))
            os.fsync(fd)
            fsync_directory(boot.directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        segment = Segment(first_seq, path, HEADER_SIZE, sealed=False, synced_size=HEADER_SIZE)
        segment.last_seq = first_seq - 1
        boot.segments.append(segment)
        self._fd = fd
        self.active = segment
        self._syncer.attach(fd, segment)

    def write_block(self, seqs: Sequence[int], raws: Sequence[bytes]) -> None:
        """Append one block to the active segment; on error it is cut back (or abandoned)."""
        segment = self.active
        assert segment is not None
        data = encode_block(seqs, raws)
        try:
            _write_all(self._fd, data)
        except OSError:
            try:  # cut what part of the write landed, so the segment stays valid
                os.ftruncate(self._fd, segment.size)
            except OSError:
                self.abandon()
            raise
        if not segment.index or seqs[0] - segment.index[-1][0] >= INDEX_EVERY:
            segment.note(seqs[0], segment.size)  # sparse: a few entries per segment
        segment.size += len(data)
        segment.last_seq = seqs[-1]
        self._dirty = True

    def abandon(self) -> None:
        """Stop using the active segment, unsynced (a crash in tests; a file ending in garbage)."""
        if self.active is not None:
            self.active.sealed = True
        if self._fd >= 0:
            self._syncer.detach()  # waits for an fsync of it in the syncer thread
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1
        self.active = None

    def seal(self) -> None:
        """Sync and close the active segment: from now on it is read-only (raises OSError)."""
        if self.active is None:
            return
        try:
            self.fsync()
        finally:
            self.abandon()

    def sync_if_due(self, *, urgent: bool) -> None:
        """After a write: ``always`` fsyncs here; ``interval`` (due, or urgent) asks the thread.

        The ``interval`` request never waits for an fsync (``syncer``).
        """
        segment = self.active
        if not self._dirty or segment is None:
            return
        policy = self._config.fsync
        if policy == "always":
            self.fsync()
            return
        now = self._monotonic()
        due = now - self._last_sync >= self._config.fsync_interval_ms / 1000
        if policy == "interval" and (urgent or due):
            self._syncer.request(segment, segment.size)
            self._dirty = False
            self._last_sync = now

    def fsync(self) -> None:
        """Make what was written durable now, after any running fsync (raises OSError)."""
        segment = self.active
        if segment is None:
            return
        self._syncer.sync_now(segment, segment.size)
        self._dirty = False
        self._last_sync = self._monotonic()

    def take_errors(self) -> list[OSError]:
        """Fsync errors from the syncer thread, each once; what they failed to sync is due again."""
        errors = self._syncer.take_errors()
        if errors:
            self._dirty = True
        return errors

    def close(self) -> None:
        """Seal the active segment and stop the syncer thread (raises OSError from the seal)."""
        try:
            self.seal()
        finally:
            self._syncer.stop()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
