"""The durable spool: one shared append-only log of raw kmsg records, per boot.

The reader appends every record once (:meth:`Spool.append`); each sink reads at its own
position with a :class:`~forwarder.spool.reader.SpoolReader` (its checkpoint is the cursor).
Design and prior art: ``SPOOL.md``; guarantees per crash point: README "Spool".

- **Start-up** (:meth:`Spool.open`) never raises on spool contents and never loops: a
  segment with a bad header is quarantined (``*.seg.bad``) and becomes a ``spool_corrupt``
  hole, the newest segment of each boot is scanned and a torn tail truncated; anything
  unexpected quarantines the segment instead of stopping the forwarder.
- **Bound**: the files never exceed ``max_bytes``. ``drop_oldest`` evicts whole segments,
  oldest boot first, and records the evicted range (``evicted.json``, written before the
  unlink), so every reader inside it gets an exact ``spool_full`` gap; ``block`` refuses
  records until :meth:`Spool.release` frees segments every sink has delivered.
- **Durability**: ``fsync = "interval"`` syncs at most every ``fsync_interval_ms`` and at once
  after a record at ``fsync_min_level`` or worse; ``"always"`` after every append; ``"never"``
  only when a segment is sealed or the spool closed.
- **Degraded**: a write that fails (ENOSPC, EIO, ...) keeps the records in memory (up to
  ``memory_bytes``; readers see them) and retries with backoff (1 s to 30 s); beyond that
  :meth:`append` refuses, so the capture buffer and then the ring hold them. Never exits.
"""

from __future__ import annotations

import contextlib
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import structlog

from forwarder.spool.config import SpoolConfig
from forwarder.spool.format import (
    BLOCK_HEAD_SIZE,
    FRAME_HEAD_SIZE,
    HEADER_SIZE,
    SegmentHeader,
    decode_frames,
    decode_header,
    encode_block,
    encode_header,
)
from forwarder.spool.segments import (
    SEGMENT_NAME,
    Boot,
    Segment,
    boot_directory_name,
    fsync_directory,
    load_evicted,
    segment_name,
)

log = structlog.get_logger("forwarder.spool")
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
INDEX_EVERY = 256


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


class Spool:
    """The spool of one forwarder (see the module docstring)."""

    def __init__(
        self,
        config: SpoolConfig,
        directory: Path,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        time_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.directory = directory
        self.segment_bytes = config.effective_segment_bytes()
        self.stats = SpoolStats()
        self.boots: list[Boot] = []  # oldest first; the current boot is last
        self.current: Boot | None = None
        self.unwritable: str | None = None  # why the disk refuses writes (degraded), if it does
        self._monotonic = monotonic
        self._time_ns = time_ns
        self._fd = -1
        self._active: Segment | None = None
        self._dirty = False
        self._last_sync = monotonic()
        self._pending: list[tuple[int, bytes]] = []  # degraded: records not on disk yet
        self._pending_bytes = 0
        self._retry_at = 0.0
        self._retry_s = RETRY_FIRST_S
        self._released: dict[str, int] = {}  # per boot: every sink delivered up to this seq

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
                boot = self._recover_boot(entry)
            except Exception as error:  # a bug or a hostile file must never stop start-up
                log.exception("spool_boot_unreadable", directory=str(entry), error=str(error))
                continue
            if boot is not None:
                self.boots.append(boot)
        self.boots.sort(key=lambda boot: boot.created_ns)
        current = self.boot(boot_id)
        if current is None:
            current = Boot(
                boot_id,
                self.directory / boot_directory_name(boot_id),
                clock_offset_ns,
                self._time_ns(),
            )
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

    def _recover_boot(self, directory: Path) -> Boot | None:
        marker = load_evicted(directory)
        segments, headers = self._scan_directory(directory)
        source = next(iter(headers.values()), None)
        if source is not None:
            boot = Boot(source.boot_id, directory, source.clock_offset_ns, source.created_ns)
        elif marker is not None:
            boot = Boot(
                str(marker["boot_id"]),
                directory,
                int(str(marker["clock_offset_ns"])),
                int(str(marker["created_ns"])),
            )
        else:
            if segments:
                log.warning("spool_boot_unknown", directory=str(directory))
            return None
        if marker is not None and marker["boot_id"] == boot.boot_id:
            boot.evicted = (int(str(marker["first_seq"])), int(str(marker["last_seq"])))
        boot.segments = [s for s in segments if not self._evicted_leftover(boot, s)]
        for segment, after in zip(boot.segments, boot.segments[1:], strict=False):
            following = None if after.bad else headers.get(after.first_seq)
            if not segment.bad and following is not None:
                segment.last_seq = following.prev_last_seq
        good = boot.good()
        if good:
            self._recover_tail(good[-1], headers[good[-1].first_seq])
        tail = max(
            (s.last_seq for s in good if s.last_seq is not None),
            default=boot.evicted[1] if boot.evicted else None,
        )
        # A quarantined newest segment may be refilled from the ring: its range stays open.
        if tail is None and boot.segments and boot.segments[-1].bad:
            tail = boot.segments[-1].first_seq - 1
        boot.tail_seq = tail
        return boot

    def _scan_directory(self, directory: Path) -> tuple[list[Segment], dict[int, SegmentHeader]]:
        """The boot's segment files, each header checked (a bad one is quarantined)."""
        segments: list[Segment] = []
        headers: dict[int, SegmentHeader] = {}
        for entry in sorted(directory.iterdir()):
            if entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    entry.unlink()
                continue
            match = SEGMENT_NAME.fullmatch(entry.name)
            if match is None:
                continue
            first = int(match.group(1))
            segment = Segment(first, entry, entry.stat().st_size, bad=match.group(2) is not None)
            segment.synced_size = segment.size
            if not segment.bad:
                header = _read_header(entry)
                if (
                    header is None
                    or header.first_seq != first
                    or boot_directory_name(header.boot_id) != directory.name
                ):
                    self._quarantine(segment, "bad_header")
                else:
                    headers[first] = header
            segments.append(segment)
        segments.sort(key=lambda segment: (segment.first_seq, not segment.bad))
        return segments, headers

    @staticmethod
    def _evicted_leftover(boot: Boot, segment: Segment) -> bool:
        """A segment already evicted (the crash came between evicted.json and the unlink)."""
        if boot.evicted is None or segment.first_seq > boot.evicted[1]:
            return False
        with contextlib.suppress(OSError):
            segment.path.unlink()
        return True

    def _recover_tail(self, segment: Segment, header: SegmentHeader) -> None:
        """Scan the newest segment of a boot; cut a torn or damaged tail."""
        data = segment.path.read_bytes()
        frames, end, _ = decode_frames(data, HEADER_SIZE, header.first_seq - 1)
        if end < len(data):
            self.stats.truncated_bytes += len(data) - end
            log.warning(
                "spool_tail_truncated",
                segment=str(segment.path),
                bytes=len(data) - end,
                kept_records=len(frames),
            )
            try:
                fd = os.open(segment.path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, end)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as error:
                # Cannot cut it: quarantine instead, never append after garbage.
                self._quarantine(segment, f"truncate failed: {error.strerror}")
        segment.size = segment.synced_size = end
        for position in range(0, len(frames), INDEX_EVERY):
            start = HEADER_SIZE if position == 0 else frames[position - 1].end
            if position == 0 or frames[position - 1].end != frames[position].end:
                segment.note(frames[position].seq, start)  # blocks start there
        segment.last_seq = frames[-1].seq if frames else header.prev_last_seq
        if segment.last_seq is None:
            segment.last_seq = header.first_seq - 1

    def _quarantine(self, segment: Segment, reason: str) -> None:
        """Rename a damaged segment ``*.bad``: its range becomes a ``spool_corrupt`` hole."""
        if segment.bad:
            return
        if segment is self._active:
            self._abandon_active()
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
        return sum(segment.size for boot in self.boots for segment in boot.segments)

    def record_bytes_pending(self) -> int:
        """Bytes held in memory while the disk refuses writes."""
        return self._pending_bytes

    # -- writing --------------------------------------------------------------------

    def append(
        self, seqs: Sequence[int], raws: Sequence[bytes], levels: Sequence[int] | None = None
    ) -> int:
        """Append records of the current boot; returns how many leading ones were taken.

        Records at or below the boot's tail are taken without a write (I2: idempotent by
        seq). Fewer than all are taken only when full in ``block`` mode, or when the disk
        fails and memory is full too: the caller keeps the rest and offers them again.
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
        new_seqs = list(seqs[start:])
        new_raws = list(raws[start:])
        urgent = levels is not None and min(levels[start:]) <= self.config.fsync_min_level
        if self.unwritable is not None or self._pending:
            self._retry_pending()
        if self.unwritable is not None or self._pending:
            taken = self._hold(new_seqs, new_raws)
        else:
            taken = self._write(new_seqs, new_raws)
        if taken:
            boot.tail_seq = new_seqs[taken - 1]
            self.stats.appended_records += taken
        self._after_write(urgent)
        return start + taken

    def _write(self, seqs: list[int], raws: list[bytes]) -> int:
        """Write records to segments (rolling and evicting as needed); how many were written."""
        written = 0
        count = len(seqs)
        # Cumulative frame bytes, computed in C: the room check is a bisect, not a loop.
        ends = list(accumulate(map(FRAME_HEAD_SIZE.__add__, map(len, raws))))
        while written < count:
            if self._active is not None and self._active.size >= self.segment_bytes:
                self._seal()
            used = self._active.size if self._active is not None else HEADER_SIZE
            before = ends[written - 1] if written else 0
            room = self.segment_bytes - used - BLOCK_HEAD_SIZE
            end = bisect_right(ends, before + room, written)
            if end == written:  # not even one record fits the active segment: roll
                if self._active is None or self._active.size == HEADER_SIZE:
                    # One record larger than the whole spool: it can only be evicted.
                    self._evict_all_and(seqs[written])
                    written += 1
                    continue
                self._seal()
                continue
            needed = ends[end - 1] - before + BLOCK_HEAD_SIZE
            if self._active is None:
                needed += HEADER_SIZE
            if not self._make_room(needed):
                return written
            try:
                if self._active is None:
                    self._new_segment(seqs[written])
                self._write_block(seqs[written:end], raws[written:end])
            except OSError as error:
                self._degrade(error)
                return written + self._hold(seqs[written:], raws[written:])
            written = end
        return written

    def _new_segment(self, first_seq: int) -> None:
        boot = self.current
        assert boot is not None
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
        self._active = segment

    def _write_block(self, seqs: list[int], raws: list[bytes]) -> None:
        segment = self._active
        assert segment is not None
        data = encode_block(seqs, raws)
        try:
            _write_all(self._fd, data)
        except OSError:
            try:  # cut what part of the write landed, so the segment stays valid
                os.ftruncate(self._fd, segment.size)
            except OSError:
                self._abandon_active()
            raise
        if not segment.index or seqs[0] - segment.index[-1][0] >= INDEX_EVERY:
            segment.note(seqs[0], segment.size)  # sparse: a few entries per segment
        segment.size += len(data)
        segment.last_seq = seqs[-1]
        self._dirty = True

    def _abandon_active(self) -> None:
        """Stop using the active segment (its file may end in garbage)."""
        if self._active is not None:
            self._active.sealed = True
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1
        self._active = None

    def _seal(self) -> None:
        """Sync and close the active segment: from now on it is read-only."""
        if self._active is None:
            return
        try:
            self._fsync()
        except OSError as error:
            self._degrade(error)
        self._abandon_active()

    def _after_write(self, urgent: bool) -> None:
        if not self._dirty or self._fd < 0:
            return
        policy = self.config.fsync
        due = self._monotonic() - self._last_sync >= self.config.fsync_interval_ms / 1000
        if policy == "always" or (policy == "interval" and (urgent or due)):
            try:
                self._fsync()
            except OSError as error:
                self._degrade(error)

    def _fsync(self) -> None:
        if self._fd < 0 or self._active is None:
            return
        began = time.perf_counter()
        os.fsync(self._fd)
        self.stats.fsyncs += 1
        self.stats.fsync_seconds += time.perf_counter() - began
        self._active.synced_size = self._active.size
        self._dirty = False
        self._last_sync = self._monotonic()

    def tick(self) -> None:
        """Call about every second: the interval fsync, and retries of a failed disk."""
        if self.unwritable is not None or self._pending:
            self._retry_pending()
        self._after_write(urgent=False)

    def sync(self) -> None:
        """Sync what was written (on drain; never raises)."""
        try:
            self._fsync()
        except OSError as error:
            self._degrade(error)

    def close(self) -> None:
        """Sync and close the active segment."""
        self._seal()

    # -- bound ----------------------------------------------------------------------

    def _make_room(self, needed: int) -> bool:
        """Evict (drop_oldest) until ``needed`` more bytes fit; False if block mode is full."""
        while self.total_bytes() + needed > self.config.max_bytes:
            victim = self._oldest_segment()
            if victim is None:
                return True  # nothing left to evict: an empty spool takes one segment
            if self.config.when_full == "block":
                return False
            self._evict(*victim)
        return True

    def _oldest_segment(self) -> tuple[Boot, Segment] | None:
        for boot in self.boots:
            if boot.segments:
                return boot, boot.segments[0]
        return None

    def _evict(self, boot: Boot, segment: Segment) -> None:
        """Drop the oldest segment; its range joins the boot's ``spool_full`` hole."""
        if segment is self._active:
            self._abandon_active()
        later = boot.segments[1:]
        last = segment.last_seq
        if later:
            last = later[0].first_seq - 1
        elif boot is self.current and boot.tail_seq is not None:
            last = boot.tail_seq
        if last is None:  # an old boot's only segment, never scanned
            last = self._scan_last(segment)
        first = boot.evicted[0] if boot.evicted is not None else segment.first_seq
        if last >= first:
            boot.evicted = (first, max(last, boot.evicted[1] if boot.evicted else last))
        released = self._released.get(boot.boot_id, -1)
        lost = max(0, last - max(released, segment.first_seq - 1))
        self.stats.evicted_records += lost
        try:
            boot.save_evicted()
            segment.path.unlink()
        except OSError as error:
            self._degrade(error)
        boot.segments.remove(segment)
        if lost:
            log.warning(
                "spool_evicted",
                boot_id=boot.boot_id,
                first_seq=segment.first_seq,
                last_seq=last,
                undelivered=lost,
            )

    def _evict_all_and(self, seq: int) -> None:
        """A record larger than the spool: evict everything, then the record itself."""
        boot = self.current
        assert boot is not None
        while (victim := self._oldest_segment()) is not None:
            self._evict(*victim)
        first = boot.evicted[0] if boot.evicted is not None else seq
        boot.evicted = (first, seq)
        self.stats.evicted_records += 1
        try:
            boot.save_evicted()
        except OSError as error:
            self._degrade(error)

    def _scan_last(self, segment: Segment) -> int:
        try:
            data = segment.path.read_bytes()
        except OSError:
            return segment.first_seq
        frames, _, _ = decode_frames(data, HEADER_SIZE, segment.first_seq - 1)
        return frames[-1].seq if frames else segment.first_seq

    def release(self, positions: Iterable[tuple[str, int]]) -> None:
        """Delete what every sink has delivered (``positions``: each sink's checkpoint).

        A position in a boot the spool does not hold reads from the oldest boot on, so it
        keeps everything. Derived from the checkpoints alone: a crash between a checkpoint
        save and an unlink leaves a file the next release deletes.
        """
        order = {boot.boot_id: index for index, boot in enumerate(self.boots)}
        lowest = len(self.boots) - 1
        delivered: dict[int, int] = {}
        for boot_id, seq in positions:
            index, at = (order[boot_id], seq) if boot_id in order else (0, -1)
            lowest = min(lowest, index)
            delivered[index] = min(delivered.get(index, at), at)
        if lowest < 0 or lowest not in delivered:
            return
        keep = self.boots[lowest]
        for boot in self.boots[:lowest]:
            self._delete_boot(boot)
        self._released[keep.boot_id] = delivered[lowest]
        self._reclaim(keep, delivered[lowest])

    def _reclaim(self, boot: Boot, delivered: int) -> None:
        while len(boot.segments) > 1 or (boot.segments and boot is not self.current):
            segment = boot.segments[0]
            if segment is self._active:
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

    def _delete_boot(self, boot: Boot) -> None:
        for segment in list(boot.segments):
            with contextlib.suppress(OSError):
                segment.path.unlink()
        with contextlib.suppress(OSError):
            (boot.directory / "evicted.json").unlink()
        with contextlib.suppress(OSError):
            boot.directory.rmdir()
        self.boots.remove(boot)

    # -- degraded: the disk refuses writes ------------------------------------------

    def _degrade(self, error: OSError) -> None:
        self.stats.write_errors += 1
        first = self.unwritable is None
        self.unwritable = f"{error.strerror or error}"
        self._retry_at = self._monotonic() + self._retry_s
        self._retry_s = min(RETRY_MAX_S, self._retry_s * 2)
        if first:
            log.error(
                "spool_unwritable",
                error=self.unwritable,
                hint="records are held in memory, then in the kernel ring, until the disk "
                "takes writes again; free space or fix the device",
            )

    def _hold(self, seqs: list[int], raws: list[bytes]) -> int:
        """Keep records in memory while the disk fails; how many fit ``memory_bytes``."""
        taken = 0
        for seq, raw in zip(seqs, raws, strict=True):
            size = FRAME_HEAD_SIZE + len(raw)
            if self._pending_bytes + size > self.config.memory_bytes:
                break
            self._pending.append((seq, raw))
            self._pending_bytes += size
            taken += 1
        return taken

    def _retry_pending(self) -> None:
        if self._monotonic() < self._retry_at:
            return
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        self.unwritable = None
        seqs = [seq for seq, _ in pending]
        raws = [raw for _, raw in pending]
        written = self._write(seqs, raws)
        if written < len(pending) and not self._pending:
            # block mode and full: keep the rest in memory, in order
            self._hold(seqs[written:], raws[written:])
        if self.unwritable is None:
            self._retry_s = RETRY_FIRST_S
            log.info("spool_writable_again")

    def pending_after(self, seq: int) -> list[tuple[int, bytes]]:
        """Records held in memory (degraded) above ``seq``."""
        return [item for item in self._pending if item[0] > seq]


def _read_header(path: Path) -> SegmentHeader | None:
    try:
        with path.open("rb") as segment_file:
            return decode_header(segment_file.read(HEADER_SIZE))
    except OSError:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
