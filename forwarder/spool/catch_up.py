"""One lagging sink reading the spool from its own position (README "Spool", "Reading").

A :class:`SinkCatchUp` has its own spool reader, encoder and router, so a lagging sink gets
the same ids, ``@timestamp``s, skips and gaps as the live path would have given it. Spool
gaps (``spool_full``, ``spool_corrupt``) become gap events with exact seq ranges; seq jumps
between spooled records (the ring overwrote them before they were read) are reported by its
router as always. After the last record of an older boot comes the ``reboot`` gap.

Its kernel events (``forwarder.spool.lagging_events``): those of the spooled records this
process never read live are classified here; the live path's wait for the cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.encoding.chunk import ChunkEncoder, Encode, FailureHook, ParseErrorHook
from forwarder.encoding.reference import Event, GapReason, Identity, encode_gap
from forwarder.routing import Item, Router
from forwarder.spool.lagging_events import EventStageFor, HeldEvents, SpooledEvents
from forwarder.spool.reader import SpooledRecord, SpoolEntry, SpoolGap, SpoolReader
from forwarder.spool.spool import Spool


class SinkCatchUp:
    """One lagging sink reading the spool from its own position."""

    def __init__(
        self,
        sink: str,
        spool: Spool,
        position: tuple[str, int] | None,
        *,
        identity_of: Callable[[str], Identity],
        encode: Encode,
        min_level: int,
        on_parse_error: ParseErrorHook,
        on_failure: FailureHook,
        updated_at: str = "",
        events_for: EventStageFor | None = None,
        classify_through: tuple[str, int] | None = None,
        on_event_dropped: Callable[[str], None] | None = None,
    ) -> None:
        self.sink = sink
        # No position yet (a new sink starting at the oldest record): the oldest boot's start.
        self.reader = SpoolReader(spool, *(position or ("", -1)))
        self._identity_of = identity_of
        self._encode = encode
        self._min_level = min_level
        self._on_parse_error = on_parse_error
        self._on_failure = on_failure
        self._updated_at = updated_at
        self._position = position or ("", -1)  # what the sink has, as routed so far
        self._fresh = position is None
        self._router: Router | None = None
        self._encoder: ChunkEncoder | None = None
        self._events = SpooledEvents(sink, spool, encode, min_level, events_for, classify_through)
        self._held = HeldEvents(sink, on_event_dropped)
        # (reason, seq range or None) of every gap event emitted, for the metrics
        self.gap_reports: list[tuple[str, tuple[str, int, int] | None]] = []

    @property
    def position(self) -> tuple[str, int]:
        """(boot_id, seq): everything up to it has been handed to the sink's queue."""
        return self._position

    def next_items(self, max_records: int) -> list[Item] | None:
        """The sink's next items from the spool; None when it has caught up."""
        entries = self.reader.read(max_records)
        if not entries:
            return None
        items: list[Item] = []
        run: list[bytes] = []
        run_boot = ""
        for index, entry in enumerate(entries):
            if isinstance(entry, SpooledRecord) and entry.boot_id == run_boot:
                if self._events.active and self._events.live_takes(entry):
                    self._route(run, items)  # this catch-up's classifying ends before it
                    run = []
                    self._events.stop()
                run.append(entry.raw)
                continue
            self._route(run, items)
            run = []
            run_boot = entry.boot_id
            self._enter_boot(entry.boot_id, items)
            if isinstance(entry, SpooledRecord):
                if self._events.active and self._events.live_takes(entry):
                    self._events.stop()
                run.append(entry.raw)
            else:
                items.extend(self._spool_gap(entry, entries[index + 1 :]))
        self._route(run, items)
        if self._router is not None and self.reader.boot_id == self._router.identity.boot_id:
            self._position = self.reader.position
        self._drain_router()
        self._held.release(items, self._position)
        return items

    def finish(self, identity: Identity) -> list[Item]:
        """Items due before attaching to the live path of ``identity``'s boot (a reboot gap).

        Every held kernel event is among them: the cursor has reached the live path.
        """
        items: list[Item] = []
        self._enter_boot(identity.boot_id, items)
        self._drain_router()
        self._held.release(items, None)
        return items

    def hold(self, items: Sequence[Item]) -> None:
        """Keep the live path's kernel events for this sink until the cursor passes them.

        Records, filtered positions and gap events of the live path are dropped: the cursor
        reads those records from the spool and its own router finds the same gaps.
        """
        self._held.hold(items)

    @property
    def dropped_events(self) -> int:
        """Live kernel events dropped: too many waited for the cursor."""
        return self._held.dropped

    # -- records -------------------------------------------------------------------------

    def _enter_boot(self, boot_id: str, items: list[Item]) -> None:
        """Route from here on with ``boot_id``'s identity; an earlier boot ends in a reboot gap."""
        if self._router is not None and self._router.identity.boot_id == boot_id:
            return
        self._events.end_boot(items)
        old_boot, old_seq = self._position
        identity = self._identity_of(boot_id)
        checkpoint: Checkpoint | None
        if self._fresh:
            checkpoint = None
            self._fresh = False
            self._position = (boot_id, -1)
        elif old_boot == boot_id:
            checkpoint = Checkpoint(boot_id, old_seq, identity.clock_offset_ns)
        else:
            if self._router is None:  # an older boot it had every record of
                self._events.close_ended_boot(self._identity_of(old_boot), old_seq, items)
            checkpoint = Checkpoint(old_boot, old_seq, 0, self._updated_at)
            self._position = (boot_id, -1)
        self._drain_router()
        self._router = Router(
            identity, {self.sink: checkpoint}, min_level=self._min_level, now_ns=time.time_ns
        )
        self._encoder = ChunkEncoder(identity, self._encode)
        startup = self._router.startup_items()[self.sink]
        for item in startup:
            self._note(item)
        items.extend(startup)
        resume = None if checkpoint is None else self._position[1]
        self._events.start_boot(identity, resume)

    def _route(self, raws: list[bytes], items: list[Item]) -> None:
        if not raws:
            return
        assert self._router is not None
        assert self._encoder is not None
        chunk = self._encoder.encode(raws, self._on_parse_error, self._on_failure)
        items.extend(self._events.route(chunk, raws, self._router))
        if len(chunk):
            self._position = (self._router.identity.boot_id, chunk.seqs[-1])

    def _spool_gap(self, gap: SpoolGap, after: list[SpoolEntry]) -> list[Item]:
        """The gap events of a spool loss (and of what before it was never spooled)."""
        identity = self._identity_of(gap.boot_id)
        following = next((e for e in after if isinstance(e, SpooledRecord)), None)
        timestamp_ns = time.time_ns()
        if following is not None and (ts_usec := _ts_usec(following.raw)) is not None:
            timestamp_ns = identity.clock_offset_ns + ts_usec * 1000
        events: list[Item] = []
        boot_id, seq = self._position
        if boot_id == gap.boot_id and gap.first_seq > seq + 1:
            events.append(
                self._gap(identity, seq + 1, gap.first_seq - 1, "missed_while_down", timestamp_ns)
            )
        events.append(self._gap(identity, gap.first_seq, gap.last_seq, gap.reason, timestamp_ns))
        self._position = (gap.boot_id, gap.last_seq)
        self._drain_router()
        checkpoint = Checkpoint(gap.boot_id, gap.last_seq, identity.clock_offset_ns)
        self._router = Router(
            identity, {self.sink: checkpoint}, min_level=self._min_level, now_ns=time.time_ns
        )
        return events

    def _gap(
        self, identity: Identity, first: int, last: int, reason: GapReason, timestamp_ns: int
    ) -> Event:
        self.gap_reports.append((reason, (identity.boot_id, first, last)))
        return encode_gap(
            host=identity.host,
            boot_id=identity.boot_id,
            first_seq=first,
            last_seq=last,
            reason=reason,
            timestamp_ns=timestamp_ns,
            checkpoint_boot_id=identity.boot_id,
            checkpoint_seq=last,
        )

    def _drain_router(self) -> None:
        if self._router is not None:
            self.gap_reports.extend(
                (reason, None) for _, reason in self._router.drain_gap_reports()
            )

    def _note(self, item: Item) -> None:
        self._position = (item.boot_id, item.checkpoint_seq)


def _ts_usec(raw: bytes) -> int | None:
    parts = raw.split(b",", 3)
    if len(parts) < 3 or not parts[2].isdigit():
        return None
    return int(parts[2])
