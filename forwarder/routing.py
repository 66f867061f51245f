"""Decide, per sink, what each record becomes: skipped, delivered, or preceded by a gap.

Pure logic (no I/O), the heart of the resume contract (DESIGN.md section 2):

- a record at or below the sink's checkpoint (same boot) is skipped: already delivered;
- a seq jump above the sink's position becomes a gap event first (``missed_while_down``
  for the first record after start, ``overwritten`` later);
- a checkpoint of another boot means a reboot: a ``reboot`` gap event (what was not
  shipped of the old boot is unknowable), then everything the new boot still has;
- records above ``min_level`` become :class:`Position` markers: not sent, but delivered
  as far as the checkpoint is concerned.

A chunk travels on as :class:`~forwarder.encoding.chunk.Slice` items (index ranges of the
chunk, shared by every sink that takes them): no per-record object is built.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.encoding.chunk import Chunk, Slice
from forwarder.encoding.reference import Event, GapReason, Identity, encode_gap, encode_record
from forwarder.source.parser import U64_MAX, Record


@dataclass(frozen=True, slots=True)
class Position:
    """A record not sent (filtered) whose seq still moves the checkpoint."""

    boot_id: str
    checkpoint_seq: int


Item = Event | Position | Slice
"""What a sink's queue holds: a standalone event (gap, kernel event), a filtered record's
position, or a slice of a chunk's records (of a merged chunk's rows, kernel events included,
for a sink that reads lines only: see forwarder.kernel_events.placement)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Records lost from the whole stream (for metrics), as seen by the reader."""

    first_seq: int
    last_seq: int
    reason: GapReason

    @property
    def lost(self) -> int:
        """How many records were lost."""
        return self.last_seq - self.first_seq + 1


class _Cursor:
    """Where one sink stands in the current boot."""

    def __init__(self, last_seq: int | None) -> None:
        self.last_seq = last_seq  # None: no checkpoint, take whatever comes first


class Router:
    """Routes parsed records to every sink according to its checkpoint."""

    def __init__(
        self,
        identity: Identity,
        checkpoints: dict[str, Checkpoint | None],
        *,
        min_level: int,
        now_ns: Callable[[], int],
    ) -> None:
        self.identity = identity
        self._min_level = min_level
        self._now_ns = now_ns
        self._cursors: dict[str, _Cursor] = {}
        self._initial: dict[str, list[Item]] = {}
        same_boot_positions: list[int] = []
        for sink, checkpoint in checkpoints.items():
            self._initial[sink] = []
            if checkpoint is None:
                self._cursors[sink] = _Cursor(None)
            elif checkpoint.boot_id == identity.boot_id:
                self._cursors[sink] = _Cursor(checkpoint.seq)
                same_boot_positions.append(checkpoint.seq)
            else:
                self._cursors[sink] = _Cursor(-1)
                self._initial[sink].append(self._reboot_gap(checkpoint))
                same_boot_positions.append(-1)  # the new boot is owed from its seq 0
        self._last_read: int | None = min(same_boot_positions, default=None)
        self._read_any = False
        self._gap_reports: list[tuple[str, GapReason]] = [
            (sink, "reboot") for sink, items in self._initial.items() if items
        ]

    def drain_gap_reports(self) -> list[tuple[str, GapReason]]:
        """(sink, reason) of every gap event emitted since the last call (for metrics)."""
        reports, self._gap_reports = self._gap_reports, []
        return reports

    def startup_items(self) -> dict[str, list[Item]]:
        """Events due before any record (reboot gaps), per sink."""
        return self._initial

    def route(self, record: Record, out: dict[str, list[Item]]) -> Gap | None:
        """Append what ``record`` means for each sink to ``out[sink]``.

        Returns the stream-wide gap this record revealed, if any (counted once in
        metrics however many sinks report it). The reference for :meth:`route_chunk`.
        """
        return self._route_one(
            record.seq,
            record.level_code,
            record.ts_usec,
            lambda: encode_record(record, self.identity),
            out,
        )

    def route_chunk(self, chunk: Chunk, out: dict[str, list[Item]]) -> list[Gap]:
        """:meth:`route` for every record of ``chunk``; returns the stream-wide gaps.

        An empty line is a record set aside (its handling failed): every sink moves past its
        seq, nothing is sent and no gap is reported. Once the first record is
        routed, a chunk of consecutive seqs that every sink stands right before goes to all
        of them at once: no gap, no skip is possible in it.
        """
        gaps: list[Gap] = []
        count = len(chunk)
        seqs = chunk.seqs
        cursors = self._cursors.values()
        start = 0
        while start < count:
            aside = chunk.set_aside > 0 and chunk.ends[start] - chunk.start(start) == 1
            make_event = None if aside else partial(Slice, chunk, start, start + 1)
            gap = self._route_one(
                seqs[start], chunk.prefixes[start] & 7, chunk.ts_usec[start], make_event, out
            )
            if gap is not None:
                gaps.append(gap)
            first = seqs[start]
            start += 1
            last = first + count - start  # what the rest would end at, consecutive
            if (
                last <= U64_MAX  # a seq near the top (a fuzzed dump): no array of the range
                and all(cursor.last_seq == first for cursor in cursors)
                and seqs[start:] == array("Q", range(first + 1, last + 1))
            ):
                self._route_all(chunk, start, out)
                break
        return gaps

    def _route_all(self, chunk: Chunk, start: int, out: dict[str, list[Item]]) -> None:
        """Every sink takes records ``start:`` of ``chunk`` (consecutive, right after it)."""
        count = len(chunk)
        if start >= count:
            return
        items: list[Item]
        if self._min_level >= 7 and not chunk.set_aside:  # nothing to filter: one slice
            items = [Slice(chunk, start, count)]
        else:
            items = self._segments(chunk, start)
        last = chunk.seqs[-1]
        for sink, cursor in self._cursors.items():
            out[sink].extend(items)
            cursor.last_seq = last
        self._last_read = last

    def _segments(self, chunk: Chunk, start: int) -> list[Item]:
        """Records ``start:`` as slices of what is sent, positions of what is filtered."""
        boot_id, min_level = self.identity.boot_id, self._min_level
        ends, prefixes, seqs = chunk.ends, chunk.prefixes, chunk.seqs
        items: list[Item] = []
        run = -1  # first index of the current run of records to send
        previous_end = chunk.start(start)
        for index in range(start, len(chunk)):
            aside = ends[index] - previous_end == 1
            previous_end = ends[index]
            if not aside and prefixes[index] & 7 <= min_level:
                if run < 0:
                    run = index
                continue
            if run >= 0:
                items.append(Slice(chunk, run, index))
                run = -1
            if not aside:
                items.append(Position(boot_id, seqs[index]))
        if run >= 0:
            items.append(Slice(chunk, run, len(chunk)))
        return items

    def _route_one(
        self,
        seq: int,
        level_code: int,
        ts_usec: int,
        make_event: Callable[[], Event | Slice] | None,
        out: dict[str, list[Item]],
    ) -> Gap | None:
        """Route one record; ``make_event`` None means the record is set aside (not sent)."""
        # Only a jump at the very first record read can predate us; any later jump is an
        # overwrite while reading, also for a sink that was still skipping delivered records.
        reason: GapReason = "overwritten" if self._read_any else "missed_while_down"
        gap = self._stream_gap(seq)
        event: Event | Slice | None = None
        filtered = level_code > self._min_level
        for sink, cursor in self._cursors.items():
            last = cursor.last_seq
            if last is not None and seq <= last:
                continue
            items = out[sink]
            if last is not None and seq > last + 1:
                items.append(self._gap(last + 1, seq, ts_usec, reason))
                self._gap_reports.append((sink, reason))
            if make_event is None:
                pass
            elif filtered:
                items.append(Position(self.identity.boot_id, seq))
            else:
                if event is None:
                    event = make_event()
                items.append(event)
            cursor.last_seq = seq
        return gap

    def _stream_gap(self, seq: int) -> Gap | None:
        previous, self._last_read = self._last_read, seq
        first_read = not self._read_any
        self._read_any = True
        if previous is None or seq <= previous + 1:
            return None
        return Gap(previous + 1, seq - 1, "missed_while_down" if first_read else "overwritten")

    def _gap(self, first_seq: int, seq: int, ts_usec: int, reason: GapReason) -> Event:
        boot_id = self.identity.boot_id
        return encode_gap(
            host=self.identity.host,
            boot_id=boot_id,
            first_seq=first_seq,
            last_seq=seq - 1,
            reason=reason,
            timestamp_ns=self.identity.clock_offset_ns + ts_usec * 1000,
            checkpoint_boot_id=boot_id,
            checkpoint_seq=seq - 1,
        )

    def _reboot_gap(self, old: Checkpoint) -> Event:
        return encode_gap(
            host=self.identity.host,
            boot_id=old.boot_id,
            first_seq=old.seq + 1,
            last_seq=None,
            reason="reboot",
            timestamp_ns=_parse_time_ns(old.updated_at) or self._now_ns(),
            checkpoint_boot_id=self.identity.boot_id,
            checkpoint_seq=-1,
        )


def _parse_time_ns(text: str) -> int | None:
    """The checkpoint's ``updated_at`` in ns: the same reboot gap gets the same time on re-send."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
