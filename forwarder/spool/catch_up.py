"""One lagging sink reading the spool from its own position (README "Spool", "Reading").

A :class:`SinkCatchUp` has its own spool reader, encoder and router, so a lagging sink gets
the same ids, ``@timestamp``s, skips and gaps as the live path would have given it. Spool
gaps (``spool_full``, ``spool_corrupt``) become gap events with exact seq ranges; seq jumps
between spooled records (the ring overwrote them before they were read) are reported by its
router as always. After the last record of an older boot comes the ``reboot`` gap.

Kernel events come from two places, split by seq so that each is made exactly once:

- records this process never read live (an older boot's, and the current boot's up to the
  spool's newest record at start, ``classify_through``) are classified here, by the sink's
  own :class:`~forwarder.kernel_events.stage.KernelEventStage`, warmed up on the records
  just before the sink's position (a report that straddles it comes out once, whole); an
  older boot's open reports are flushed before its ``reboot`` gap;
- records read live in this process are classified by the live stage, whose events for
  this sink wait here (:meth:`SinkCatchUp.hold`) until the cursor passes their record.

So a crash while a sink lags loses none of its kernel events: after the restart, those of
records in the spool come from here, the others from the ring through the live stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

import structlog

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.encoding.chunk import ChunkEncoder, Encode, FailureHook, ParseErrorHook, Slice
from forwarder.encoding.reference import Event, GapReason, Identity, encode_gap
from forwarder.kernel_events.placement import insert_after
from forwarder.kernel_events.stage import KernelEventStage
from forwarder.routing import Item, Router
from forwarder.spool.reader import SpooledRecord, SpoolEntry, SpoolGap, SpoolReader
from forwarder.spool.spool import Spool

log = structlog.get_logger("forwarder.spool")
# Kernel events made live while a sink lags wait in memory for its cursor; they are rare (one
# per report), so this bound is only reached by a sink down for days beside a noisy kernel.
MAX_HELD_EVENTS: Final = 10_000
# Records before a sink's position fed to its classifier first: more than any report's span
# (a report closes after 200 records without a member).
WARM_UP_RECORDS: Final = 1024

# (sink, the boot's identity, the sink's seq in that boot or None) -> the sink's own stage,
# or None when kernel events are off.
EventStageFor = Callable[[str, Identity, "int | None"], KernelEventStage | None]


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
        self._spool = spool
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
        self._events_for = events_for
        # (live boot, seq): the live path classifies that boot's records above seq; None: the
        # live path classifies nothing of the spool (kernel events off, or a test's spool).
        self._classify_through = classify_through
        self._events: KernelEventStage | None = None  # classifies what this catch-up reads
        self._on_event_dropped = on_event_dropped
        # (reason, seq range or None) of every gap event emitted, for the metrics
        self.gap_reports: list[tuple[str, tuple[str, int, int] | None]] = []
        self._held: list[Event] = []  # live kernel events, waiting for the cursor to pass them
        self.dropped_events = 0

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
                if self._events is not None and self._live_classifies(entry):
                    self._route(run, items)  # this catch-up's classifying ends before it
                    run = []
                    self._events = None
                run.append(entry.raw)
                continue
            self._route(run, items)
            run = []
            run_boot = entry.boot_id
            self._enter_boot(entry.boot_id, items)
            if isinstance(entry, SpooledRecord):
                if self._events is not None and self._live_classifies(entry):
                    self._events = None
                run.append(entry.raw)
            else:
                items.extend(self._spool_gap(entry, entries[index + 1 :]))
        self._route(run, items)
        if self._router is not None and self.reader.boot_id == self._router.identity.boot_id:
            self._position = self.reader.position
        self._drain_router()
        self._release_held(items, everything=False)
        return items

    def finish(self, identity: Identity) -> list[Item]:
        """Items due before attaching to the live path of ``identity``'s boot (a reboot gap).

        Every held kernel event is among them: the cursor has reached the live path.
        """
        items: list[Item] = []
        self._enter_boot(identity.boot_id, items)
        self._drain_router()
        self._release_held(items, everything=True)
        return items

    def hold(self, items: Sequence[Item]) -> None:
        """Keep the live path's kernel events for this sink until the cursor passes them.

        Records, filtered positions and gap events of the live path are dropped: the cursor
        reads those records from the spool and its own router finds the same gaps.
        """
        for item in items:
            if isinstance(item, Event):
                self._hold_event(item)
            elif isinstance(item, Slice) and item.chunk.events:  # a merged chunk's event rows
                rows = item.chunk.events
                for row in range(item.start, item.stop):
                    if (event := rows.get(row)) is not None:
                        self._hold_event(event)

    def _hold_event(self, event: Event) -> None:
        if event.kind != "kernel_event":
            return
        if len(self._held) >= MAX_HELD_EVENTS:
            self.dropped_events += 1
            if self._on_event_dropped is not None:
                self._on_event_dropped(self.sink)
            return
        self._held.append(event)

    def _release_held(self, items: list[Item], *, everything: bool) -> None:
        """Put the held events the cursor has passed right after their records in ``items``."""
        if not self._held:
            return
        boot_id, seq = self._position
        ready = [
            event
            for event in self._held
            if everything or (event.boot_id == boot_id and event.checkpoint_seq <= seq)
        ]
        if not ready:
            return
        self._held = [event for event in self._held if event not in ready]
        # Only this boot's items are ordered by seq alongside the events.
        lo = next(
            (index for index, item in enumerate(items) if item.boot_id == ready[0].boot_id),
            len(items),
        )
        for event in ready:
            insert_after(items, event.checkpoint_seq, [event], lo=lo)

    # -- kernel events of what the live path never read --------------------------------

    def _live_classifies(self, entry: SpooledRecord) -> bool:
        """True if the live stage classifies ``entry`` (a record it read in this process)."""
        through = self._classify_through
        return through is None or (entry.boot_id == through[0] and entry.seq > through[1])

    def _start_events(self, identity: Identity, resume: int | None) -> None:
        """Start the boot's own classifier, if this catch-up classifies any of its records."""
        self._events = None
        through = self._classify_through
        if self._events_for is None or through is None:
            return
        live_boot, live_from = through
        if identity.boot_id == live_boot and resume is not None and resume >= live_from:
            return  # the live path classifies everything this sink is still owed
        self._events = self._events_for(self.sink, identity, resume)
        if self._events is not None and resume is not None and resume >= 0:
            self._warm_up(identity, resume)

    def _warm_up(self, identity: Identity, seq: int) -> None:
        """Feed the records just before ``seq`` to the classifier, sending nothing."""
        assert self._events is not None
        boot_id = identity.boot_id
        reader = SpoolReader(self._spool, boot_id, max(-1, seq - WARM_UP_RECORDS))
        raws = [
            entry.raw
            for entry in reader.read(WARM_UP_RECORDS)
            if isinstance(entry, SpooledRecord) and entry.boot_id == boot_id and entry.seq <= seq
        ]
        if not raws:
            return
        chunk = ChunkEncoder(identity, self._encode).encode(raws, _ignore_error, _ignore_failure)
        # A router of its own: what these records mean for the sink was delivered already.
        router = Router(
            identity,
            {self.sink: Checkpoint(boot_id, seq, identity.clock_offset_ns)},
            min_level=self._min_level,
            now_ns=time.time_ns,
        )
        self._events.route(chunk, raws, router, {self.sink: []}, end=False)

    def _flush_events(self, items: list[Item]) -> None:
        """An older boot ended: its open reports will get no more records."""
        if self._events is not None:
            out: dict[str, list[Item]] = {self.sink: []}
            self._events.flush(out)
            items.extend(out[self.sink])
        self._events = None

    # -- records -------------------------------------------------------------------------

    def _enter_boot(self, boot_id: str, items: list[Item]) -> None:
        """Route from here on with ``boot_id``'s identity; an earlier boot ends in a reboot gap."""
        if self._router is not None and self._router.identity.boot_id == boot_id:
            return
        self._flush_events(items)
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
        self._start_events(identity, resume)

    def _route(self, raws: list[bytes], items: list[Item]) -> None:
        if not raws:
            return
        assert self._router is not None
        assert self._encoder is not None
        chunk = self._encoder.encode(raws, self._on_parse_error, self._on_failure)
        out: dict[str, list[Item]] = {self.sink: []}
        if self._events is not None:
            self._events.route(chunk, raws, self._router, out, end=False)
        else:
            self._router.route_chunk(chunk, out)
        items.extend(out[self.sink])
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


def _ignore_error(raw: bytes, error: Exception) -> None:
    """A record the warm-up cannot parse: counted when it was first read."""


def _ignore_failure(raw: bytes, error: Exception, seq: int | None) -> None:
    """A record the warm-up cannot encode: set aside when it was first read."""
