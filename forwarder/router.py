"""Decide, per sink, what each record becomes: skipped, delivered, or preceded by a gap.

Pure logic (no I/O), the heart of the resume contract (DESIGN.md section 2):

- a record at or below the sink's checkpoint (same boot) is skipped: already delivered;
- a seq jump above the sink's position becomes a gap event first (``missed_while_down``
  for the first record after start, ``overwritten`` later);
- a checkpoint of another boot means a reboot: a ``reboot`` gap event (what was not
  shipped of the old boot is unknowable), then everything the new boot still has;
- records above ``min_level`` become :class:`Position` markers: not sent, but delivered
  as far as the checkpoint is concerned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from forwarder.checkpoint import Checkpoint
from forwarder.encode import Event, GapReason, Identity, encode_gap, encode_record
from forwarder.kmsg import Record


@dataclass(frozen=True, slots=True)
class Position:
    """A record not sent (filtered) whose seq still moves the checkpoint."""

    boot_id: str
    checkpoint_seq: int


Item = Event | Position


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
        encode: Callable[[Record, Identity], Event] = encode_record,
    ) -> None:
        self.identity = identity
        self._encode = encode
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
        metrics however many sinks report it).
        """
        # Only a jump at the very first record read can predate us; any later jump is an
        # overwrite while reading, also for a sink that was still skipping delivered records.
        reason: GapReason = "overwritten" if self._read_any else "missed_while_down"
        event: Event | None = None
        filtered = record.level_code > self._min_level
        for sink, cursor in self._cursors.items():
            last = cursor.last_seq
            if last is not None and record.seq <= last:
                continue
            # Encoded before anything changes: a record that fails to encode leaves no trace.
            item: Item
            if filtered:
                item = Position(self.identity.boot_id, record.seq)
            else:
                if event is None:
                    event = self._encode(record, self.identity)
                item = event
            items = out[sink]
            if last is not None and record.seq > last + 1:
                items.append(self._gap(last + 1, record, reason))
                self._gap_reports.append((sink, reason))
            items.append(item)
            cursor.last_seq = record.seq
        return self._stream_gap(record.seq)

    def set_aside(self, record: Record, out: dict[str, list[Item]]) -> Gap | None:
        """Move every sink past a record that is not sent (its handling failed: dead-lettered).

        Gaps before it are reported as ``route`` would; the record itself is no gap: it was
        read. A sink's checkpoint passes it with the next item delivered.
        """
        reason: GapReason = "overwritten" if self._read_any else "missed_while_down"
        for sink, cursor in self._cursors.items():
            last = cursor.last_seq
            if last is not None and record.seq <= last:
                continue
            if last is not None and record.seq > last + 1:
                out[sink].append(self._gap(last + 1, record, reason))
                self._gap_reports.append((sink, reason))
            cursor.last_seq = record.seq
        return self._stream_gap(record.seq)

    def _stream_gap(self, seq: int) -> Gap | None:
        previous, self._last_read = self._last_read, seq
        first_read = not self._read_any
        self._read_any = True
        if previous is None or seq <= previous + 1:
            return None
        return Gap(previous + 1, seq - 1, "missed_while_down" if first_read else "overwritten")

    def _gap(self, first_seq: int, record: Record, reason: GapReason) -> Event:
        boot_id = self.identity.boot_id
        return encode_gap(
            host=self.identity.host,
            boot_id=boot_id,
            first_seq=first_seq,
            last_seq=record.seq - 1,
            reason=reason,
            timestamp_ns=self.identity.clock_offset_ns + record.ts_usec * 1000,
            checkpoint_boot_id=boot_id,
            checkpoint_seq=record.seq - 1,
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
