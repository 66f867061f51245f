"""Read the spool from a position: one reader per sink, positioned at its checkpoint.

:meth:`SpoolReader.read` returns what follows the position, in order: records exactly as
spooled, and a :class:`SpoolGap` for every range the spool lost (evicted: ``spool_full``;
quarantined: ``spool_corrupt``), exact to the seq. A seq jump between two stored records is
no spool loss (the ring overwrote them before they were read) and is left to the router,
which reports it as it always has. Every frame's CRC is checked; a damaged sealed segment
is quarantined on the spot and its range becomes a hole, so a corrupt record is never
returned. After the last record of an older boot the reader moves on to the next boot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from forwarder.spool.format import block_span, decode_frames
from forwarder.spool.segments import Boot, Segment, SpoolGapReason
from forwarder.spool.spool import Spool

READ_BYTES = 262_144


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """One raw kmsg record as spooled."""

    boot_id: str
    seq: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class SpoolGap:
    """Seqs the spool lost, exact: ``first_seq..last_seq`` of ``boot_id``."""

    boot_id: str
    first_seq: int
    last_seq: int
    reason: SpoolGapReason

    @property
    def lost(self) -> int:
        """How many records."""
        return self.last_seq - self.first_seq + 1


SpoolEntry = SpooledRecord | SpoolGap


class SpoolReader:
    """A cursor over the spool: everything of ``boot_id`` up to ``seq`` is behind it."""

    def __init__(self, spool: Spool, boot_id: str, seq: int) -> None:
        self.spool = spool
        self.boot_id = boot_id
        self.seq = seq
        self._hint: tuple[Segment, int, int] | None = None  # segment, offset, seq before it

    @property
    def position(self) -> tuple[str, int]:
        """(boot_id, seq) of the last entry read."""
        return self.boot_id, self.seq

    def read(self, max_records: int = 1024) -> list[SpoolEntry]:
        """Up to about ``max_records`` entries after the position; [] when caught up."""
        out: list[SpoolEntry] = []
        moves = 0
        # Ends: every pass returns entries (the position grows), moves to a later boot
        # (at most once per boot), or returns.
        while len(out) < max_records and moves <= len(self.spool.boots):
            boot = self.spool.boot(self.boot_id)
            if boot is None:
                if not self.spool.boots:
                    return out
                boot = self.spool.boots[0]
                self.boot_id, self.seq, self._hint = boot.boot_id, -1, None
            entries = self._read_boot(boot, max_records - len(out))
            if entries:
                out.extend(entries)
                continue
            position = self.spool.boots.index(boot)
            if boot is self.spool.current or position + 1 >= len(self.spool.boots):
                return out
            # An older boot is finished: what an open range of it hid is inside the reboot gap.
            following = self.spool.boots[position + 1]
            self.boot_id, self.seq, self._hint = following.boot_id, -1, None
            moves += 1
        return out

    def _read_boot(self, boot: Boot, limit: int) -> list[SpoolEntry]:
        records = self._records_after(boot, self.seq, limit)
        next_seq = records[0].seq if records else None
        out: list[SpoolEntry] = []
        for first, last, reason in boot.holes():
            end = last if last is not None else (next_seq - 1 if next_seq is not None else None)
            if end is None:
                break
            if next_seq is not None:
                end = min(end, next_seq - 1)
            start = max(first, self.seq + 1)
            if start > end or (next_seq is not None and first >= next_seq):
                continue
            out.append(SpoolGap(boot.boot_id, start, end, reason))
            self.seq = end
        for record in records:
            if record.seq > self.seq:
                out.append(record)
                self.seq = record.seq
        return out

    def _records_after(self, boot: Boot, after: int, limit: int) -> list[SpooledRecord]:
        """Records of ``boot`` above ``after``, from one segment (or memory when degraded)."""
        # Bounded: a pass that finds damage quarantines one more segment, or it returns.
        for _ in range(len(boot.segments) + 1):
            damaged = False
            for segment in _segments_from(boot, after):
                records = self._read_segment(boot, segment, after, limit)
                if records is None:
                    damaged = True
                    break
                if records:
                    return records
            if not damaged:
                break
        if boot is self.spool.current:
            return [
                SpooledRecord(boot.boot_id, seq, raw)
                for seq, raw in self.spool.pending_after(after)[:limit]
            ]
        return []

    def _read_segment(
        self, boot: Boot, segment: Segment, after: int, limit: int
    ) -> list[SpooledRecord] | None:
        """Records above ``after`` in ``segment``; None if it proved damaged (quarantined)."""
        hint = self._hint
        if hint is not None and hint[0] is segment and hint[2] <= after:
            offset = hint[1]
            floor = hint[2]
        else:
            offset = segment.seek(after + 1)
            floor = segment.first_seq - 1
        end = segment.size
        out: list[SpooledRecord] = []
        try:
            fd = os.open(segment.path, os.O_RDONLY)
        except OSError:
            self.spool.quarantine(segment, "unreadable")
            return None
        try:
            while offset < end and len(out) < limit:
                wanted = min(READ_BYTES, end - offset)
                data = os.pread(fd, wanted, offset)
                frames, used, how = decode_frames(data, 0, floor)
                span = block_span(data) if how == "short" and not frames else None
                if span is not None and wanted < span <= end - offset:
                    # One block longer than the window (a backlog written in one go): read it whole.
                    wanted = span
                    data = os.pread(fd, wanted, offset)
                    frames, used, how = decode_frames(data, 0, floor)
                window_end = offset + len(data)
                if (
                    len(data) < wanted  # the file is shorter than written: cut behind our back
                    or how == "bad"
                    or (how == "short" and (not frames or window_end >= end))
                ):
                    self.spool.quarantine(segment, "bad_frame")
                    self._hint = None
                    return None
                boot_id = boot.boot_id
                out.extend(
                    SpooledRecord(boot_id, frame.seq, frame.payload)
                    for frame in frames
                    if frame.seq > after
                )
                if frames:
                    floor = frames[-1].seq
                offset += used
                self._hint = (segment, offset, floor)
            if offset >= end and segment.last_seq is not None and floor < segment.last_seq:
                # The next segment's header says this one went further: it was cut short.
                self.spool.quarantine(segment, "truncated")
                self._hint = None
                return None
        except OSError:
            self.spool.quarantine(segment, "read_error")
            return None
        finally:
            os.close(fd)
        return out


def _segments_from(boot: Boot, after: int) -> list[Segment]:
    """Readable segments that may hold seqs above ``after``, oldest first."""
    good = boot.good()
    start = 0
    for position, segment in enumerate(good):
        if segment.first_seq <= after + 1:
            start = position
    return good[start:]
