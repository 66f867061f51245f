"""A lagging sink's kernel events, each made once: from the live path or from the spool.

They are split by seq (README "Spool", "Reading"):

- :class:`SpooledEvents` classifies the spooled records this process never read live (an
  older boot's, and the current boot's up to the spool's newest record at start), with the
  sink's own :class:`~forwarder.kernel_events.stage.KernelEventStage`, warmed up on the
  records just before the sink's position so that a report straddling it comes out once,
  whole; an older boot's open reports are closed when that boot ends;
- :class:`HeldEvents` keeps the live path's events for the sink (records read live in this
  process) until its cursor passes their record.

So a crash while a sink lags loses none of its kernel events: after the restart, those of
records in the spool come from the spool, the others from the ring through the live path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.encoding.chunk import Chunk, ChunkEncoder, Encode, Slice
from forwarder.encoding.reference import Event, Identity
from forwarder.kernel_events.placement import insert_after
from forwarder.kernel_events.stage import KernelEventStage
from forwarder.routing import Item, Router
from forwarder.spool.reader import SpooledRecord, SpoolReader
from forwarder.spool.spool import Spool

# Kernel events made live while a sink lags wait in memory for its cursor; they are rare (one
# per report), so this bound is only reached by a sink down for days beside a noisy kernel.
MAX_HELD_EVENTS: Final = 10_000
# Records before a sink's position fed to its classifier first: more than any report's span
# (a report closes after 200 records without a member).
WARM_UP_RECORDS: Final = 1024

# (sink, the boot's identity, the sink's seq in that boot or None) -> the sink's own stage,
# or None when kernel events are off.
EventStageFor = Callable[[str, Identity, "int | None"], KernelEventStage | None]


class SpooledEvents:
    """Classifies, for one sink, the spooled records the live path never read.

    ``classify_through`` is (live boot, seq): the live path classifies that boot's records
    above seq. None, or no ``stage_for``: this side classifies nothing.
    """

    def __init__(
        self,
        sink: str,
        spool: Spool,
        encode: Encode,
        min_level: int,
        stage_for: EventStageFor | None,
        classify_through: tuple[str, int] | None,
    ) -> None:
        self._sink = sink
        self._spool = spool
        self._encode = encode
        self._min_level = min_level
        self._stage_for = stage_for
        self._through = classify_through
        self._stage: KernelEventStage | None = None

    @property
    def active(self) -> bool:
        """Whether the records read now are classified here."""
        return self._stage is not None

    def live_takes(self, entry: SpooledRecord) -> bool:
        """True if the live path classifies ``entry`` (a record it read in this process)."""
        through = self._through
        return through is None or (entry.boot_id == through[0] and entry.seq > through[1])

    def stop(self) -> None:
        """The live path classifies from here on (its open reports are the live path's)."""
        self._stage = None

    def start_boot(self, identity: Identity, resume: int | None) -> None:
        """Classify ``identity``'s boot from the sink's seq ``resume`` there (None: none)."""
        self._stage = None
        through = self._through
        if self._stage_for is None or through is None:
            return
        live_boot, live_from = through
        if identity.boot_id == live_boot and resume is not None and resume >= live_from:
            return  # the live path classifies everything this sink is still owed
        self._stage = self._stage_for(self._sink, identity, resume)
        if self._stage is not None and resume is not None and resume >= 0:
            self._warm_up(identity, resume)

    def route(self, chunk: Chunk, raws: Sequence[bytes], router: Router) -> list[Item]:
        """``chunk`` routed for the sink, with its kernel events right after their records."""
        routed: dict[str, list[Item]] = {self._sink: []}
        if self._stage is None:
            router.route_chunk(chunk, routed)
        else:
            self._stage.route(chunk, raws, router, routed, end=False)
        return routed[self._sink]

    def end_boot(self, items: list[Item]) -> None:
        """The boot's records ended (an older boot): close its open reports into ``items``."""
        if self._stage is not None:
            out: dict[str, list[Item]] = {self._sink: []}
            self._stage.flush(out)
            items.extend(out[self._sink])
        self._stage = None

    def close_ended_boot(self, identity: Identity, seq: int, items: list[Item]) -> None:
        """Close the reports still open where an older boot ended, into ``items``.

        The sink had every record of that boot (up to ``seq``), but a report still open at
        its end was never made: the forwarder reading it went down with the boot (an oops
        before a hang, a panic). Its event comes at the boot's last record, before the
        ``reboot`` gap. (A report the live path flushed after 2 s of quiet just before the
        reboot may come twice, with the same id.)
        """
        if self._stage_for is None or self._through is None or seq < 0:
            return
        self._stage = self._stage_for(self._sink, identity, seq - 1)
        if self._stage is not None:
            self._warm_up(identity, seq)  # events up to seq were made live: not sent here
        self.end_boot(items)

    def _warm_up(self, identity: Identity, seq: int) -> None:
        """Feed the records just before ``seq`` to the classifier, sending nothing."""
        assert self._stage is not None
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
            {self._sink: Checkpoint(boot_id, seq, identity.clock_offset_ns)},
            min_level=self._min_level,
            now_ns=time.time_ns,
        )
        self._stage.route(chunk, raws, router, {self._sink: []}, end=False)


class HeldEvents:
    """The live path's kernel events for one lagging sink, waiting for its cursor."""

    def __init__(self, sink: str, on_dropped: Callable[[str], None] | None = None) -> None:
        self._sink = sink
        self._on_dropped = on_dropped
        self._held: list[Event] = []
        self.dropped = 0

    def hold(self, items: Sequence[Item]) -> None:
        """Keep the kernel events among the live path's ``items`` (the rest the spool has)."""
        for item in items:
            if isinstance(item, Event):
                self._hold(item)
            elif isinstance(item, Slice) and item.chunk.events:  # a merged chunk's event rows
                rows = item.chunk.events
                for row in range(item.start, item.stop):
                    if (event := rows.get(row)) is not None:
                        self._hold(event)

    def release(self, items: list[Item], position: tuple[str, int] | None) -> None:
        """Put the held events up to ``position`` (None: all) right after their records."""
        if not self._held:
            return
        ready: list[Event] = []
        if position is None:
            ready, self._held = self._held, []
        else:  # one pass: up to 10,000 held events, compared by position only
            boot_id, seq = position
            waiting: list[Event] = []
            for event in self._held:
                passed = event.boot_id == boot_id and event.checkpoint_seq <= seq
                (ready if passed else waiting).append(event)
            if not ready:
                return
            self._held = waiting
        # Only this boot's items are ordered by seq alongside the events.
        lo = next(
            (index for index, item in enumerate(items) if item.boot_id == ready[0].boot_id),
            len(items),
        )
        for event in ready:
            insert_after(items, event.checkpoint_seq, [event], lo=lo)

    def _hold(self, event: Event) -> None:
        if event.kind != "kernel_event":
            return
        if len(self._held) >= MAX_HELD_EVENTS:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped(self._sink)
            return
        self._held.append(event)


def _ignore_error(raw: bytes, error: Exception) -> None:
    """A record the warm-up cannot parse: counted when it was first read."""


def _ignore_failure(raw: bytes, error: Exception, seq: int | None) -> None:
    """A record the warm-up cannot encode: set aside when it was first read."""
