"""How the running server feeds its sinks through the spool (README "Spool", "Reading").

The reader appends each chunk's records once (:meth:`SpoolFeeds.append`), routes the chunk
to the attached sinks as always, and hands their items over with :meth:`SpoolFeeds.deliver`:
a caught-up sink gets them from memory; a failing sink with a few batches queued is
detached and a catch-up task feeds it from the spool (:class:`SinkCatchUp`) until it has
caught up, then attaches it again. :meth:`SpoolFeeds.plan` decides at start which sinks
begin lagging, and :meth:`SpoolFeeds.housekeeping` syncs and releases the spool once a
second from the checkpoints, the only cursors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from typing import Final

import structlog

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.delivery.worker import SinkWorker
from forwarder.encoding.chunk import Chunk, Encode, ParseErrorHook
from forwarder.encoding.reference import Identity
from forwarder.kernel_events.stage import KernelEventStage
from forwarder.routing import Item
from forwarder.spool.appender import SpoolAppender
from forwarder.spool.catch_up import SinkCatchUp
from forwarder.spool.catch_up_loop import CatchUpLoop
from forwarder.spool.fanout import CheckpointTracker, SharedRouter
from forwarder.spool.live_queue import backed_up, put_live
from forwarder.spool.loss_counts import SpoolLossCounts
from forwarder.spool.spool import Spool
from forwarder.spool.start_plan import plan_start
from forwarder.telemetry.events import Emitter

log = structlog.get_logger("forwarder.spool")
HOUSEKEEPING_S: Final = 1.0
LAG_BATCHES: Final = 4  # a failing sink with this many batches queued reads from the spool


class SpoolFeeds:
    """The spool, and which sinks read it (lagging) rather than memory (attached)."""

    def __init__(
        self,
        spool: Spool,
        store: CheckpointTracker,
        *,
        host: str,
        start_at: str,
        min_level: int,
        encode: Encode,
        on_parse_error: ParseErrorHook,
        emit: Emitter,
    ) -> None:
        self.spool = spool
        self._appender = SpoolAppender(spool, self.release)
        self._store = store
        self._host = host
        self._start_at = start_at
        self._min_level = min_level
        self._encode = encode
        self._on_parse_error = on_parse_error
        self._emit = emit
        self.router: SharedRouter | None = None
        self._events: KernelEventStage | None = None  # the live stage
        # Per sink lagging at start: the spool's newest seq then (start_plan.StartPlan)
        self.spooled_through: dict[str, int] = {}
        self.workers: dict[str, SinkWorker] = {}
        self.catch_ups: dict[str, SinkCatchUp] = {}  # lagging sinks
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._queued: dict[str, tuple[str, int]] = {}  # per sink: last position queued live
        self._lag_records: dict[str, int] = {}
        self.fresh: set[str] = set()  # sinks with no position yet
        self._starts: dict[str, tuple[str, int]] = {}  # new sinks' start positions, to save
        self.reading_done = False
        self._losses = SpoolLossCounts(emit)

    # -- start-up --------------------------------------------------------------------

    def plan(self, checkpoints: dict[str, Checkpoint | None]) -> dict[str, Checkpoint | None]:
        """Sinks the spool holds more for start lagging; the others (returned) start live."""
        plan = plan_start(self.spool, checkpoints, self._start_at)
        self.fresh |= plan.fresh
        self._starts.update(plan.starts)
        self._queued.update(plan.queued)
        self.spooled_through.update(plan.spooled_through)
        for name, (position, updated_at) in plan.lagging.items():
            self.catch_ups[name] = self._new_catch_up(name, position, updated_at)
        return plan.live

    def attach_server(
        self,
        router: SharedRouter,
        workers: dict[str, SinkWorker],
        max_records: dict[str, int],
        events: KernelEventStage,
    ) -> None:
        """The live router, the workers, each sink's batch size, the live kernel-event stage."""
        self.router = router
        self.workers = workers
        self._events = events
        self._lag_records = {name: LAG_BATCHES * size for name, size in max_records.items()}

    def start(self) -> None:
        """Save new sinks' start positions; start a catch-up for each lagging sink (in the loop).

        Positions are saved by each sink's one checkpoint writer, like any other.
        """
        for name, (boot_id, seq) in self._starts.items():
            self.workers[name].save_start(boot_id, seq)
        self._starts.clear()
        for name in list(self.catch_ups):
            self._start_catch_up(name)

    def startup_queued(self, name: str, items: list[Item]) -> None:
        """The router's start-up items (a reboot gap) were queued for ``name``."""
        self._queued[name] = (items[-1].boot_id, items[-1].checkpoint_seq)

    def _new_catch_up(
        self, name: str, position: tuple[str, int] | None, updated_at: str = ""
    ) -> SinkCatchUp:
        current = self.spool.current
        assert current is not None, "the spool is open"
        return SinkCatchUp(
            name,
            self.spool,
            position,
            identity_of=self.identity_of,
            encode=self._encode,
            min_level=self._min_level,
            on_parse_error=self._on_parse_error,
            on_failure=_already_set_aside,
            updated_at=updated_at,
            events_for=self._events_for,
            # Detached while running: the live stage has classified every record it owes.
            classify_through=(current.boot_id, self.spooled_through.get(name, -1)),
            on_event_dropped=self._emit.kernel_event_dropped,
        )

    def _events_for(
        self, sink: str, identity: Identity, resume: int | None
    ) -> KernelEventStage | None:
        """A catch-up's own kernel-event stage (None while kernel events are off)."""
        return None if self._events is None else self._events.for_sink(sink, identity, resume)

    def _select(self, name: str, items: Sequence[Item]) -> Sequence[Item]:
        """``items`` as ``name`` takes them (its event selection)."""
        return items if self._events is None else self._events.select(name, items)

    def identity_of(self, boot_id: str) -> Identity:
        """A boot's identity: its stored clock offset keeps ids and timestamps stable."""
        if self.router is not None and boot_id == self.router.identity.boot_id:
            return self.router.identity
        return Identity(self._host, boot_id, self.spool.clock_offset_ns(boot_id) or 0)

    # -- the reader's side -----------------------------------------------------------

    async def append(self, chunk: Chunk, raws: list[bytes]) -> None:
        """Append the chunk's records (``appender``: small ones coalesced, urgent ones at once).

        While the spool refuses (block mode full, disk and memory full) this waits: the
        backpressure that ends at the capture buffer, then the ring.
        """
        if raws:
            await self._appender.append(chunk.seqs, raws, chunk.prefixes)
            self._persist_fresh_starts(chunk)

    def flush(self) -> None:
        """Write what the appender gathered: before anything reads the spool or syncs it."""
        self._appender.flush()

    def sync(self) -> None:
        """Write what was gathered and fsync it (the drain)."""
        self._appender.flush()
        self.spool.sync()

    def close(self) -> None:
        """Write what was gathered; seal the spool (shutdown)."""
        self._appender.flush()
        self.spool.close()

    def _persist_fresh_starts(self, chunk: Chunk) -> None:
        """A sink with no position yet records where it begins: the first record it is given."""
        if not self.fresh or not len(chunk):
            return
        assert self.router is not None
        identity = self.router.identity
        for name in sorted(self.fresh):
            start = chunk.seqs[0] - 1
            self.workers[name].save_start(identity.boot_id, start)
            self._queued[name] = (identity.boot_id, start)
        self.fresh.clear()

    async def deliver(self, out: dict[str, list[Item]]) -> None:
        """Queue each caught-up sink's items; a failing sink that is backed up starts lagging.

        A healthy sink that is only slower than the reader (a replay, a burst) still holds the
        reader back, as without a spool: sending it from the spool would parse and encode
        every record twice for no gain. A sink that fails never holds anyone back.
        """
        for name, items in out.items():
            if not items:
                continue
            catch_up = self.catch_ups.get(name)
            if catch_up is None and self._backed_up(name):
                catch_up = self._detach(name)
            if catch_up is not None:
                # A lagging sink reads its records from the spool at its own cursor: what the
                # live path still has for it (kernel events) waits for that cursor.
                catch_up.hold(items)
                continue
            if not await put_live(self.workers[name], items):
                self._detach(name).hold(items)
                continue
            self._queued[name] = (items[-1].boot_id, items[-1].checkpoint_seq)

    def _detach(self, name: str) -> SinkCatchUp:
        """Take ``name`` off the live path; one catch-up task feeds it from the spool."""
        assert self.router is not None
        self.router.detach(name)
        position = self._queued.get(name)
        catch_up = self.catch_ups[name] = self._new_catch_up(name, position)
        self._start_catch_up(name)
        log.info("sink_lagging", sink=name, position=position)
        return catch_up

    def _backed_up(self, name: str) -> bool:
        return backed_up(self.workers[name], self._lag_records[name])

    # -- lagging sinks ----------------------------------------------------------------

    def _start_catch_up(self, name: str) -> None:
        running = self._tasks.get(name)
        assert running is None or running.done(), f"a second catch-up for sink {name}"
        assert self.router is not None
        loop = CatchUpLoop(
            self.catch_ups[name],
            self.workers[name].batcher,
            self.router,
            self.spool,
            flush=self.flush,
            backed_up=partial(self._backed_up, name),
            select=partial(self._select, name),
            count_gaps=self._losses.catch_up_gaps,
            reading_done=lambda: self.reading_done,
            attached=self._attached,
        )
        self._tasks[name] = asyncio.create_task(loop.run(), name=f"catch-up-{name}")

    def _attached(self, name: str, position: tuple[str, int]) -> None:
        """``name`` caught up and takes the live path again from ``position``."""
        self._queued[name] = position
        del self.catch_ups[name]
        self._tasks.pop(name, None)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The running catch-up tasks."""
        return list(self._tasks.values())

    # -- housekeeping ----------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Once a second: the interval fsync, disk retries, release, eviction counts."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self.flush()
            self.spool.tick()
            self.release()
            self._losses.evictions(self.spool.stats)

    def release(self) -> None:
        """Delete what every sink has delivered (their checkpoints are the only cursors)."""
        if self.fresh:
            return
        positions = [self._store.positions.get(name) for name in self.workers]
        if any(position is None for position in positions):
            return
        self.spool.release([p for p in positions if p is not None])

    def lag_records(self, name: str) -> int:
        """Records a lagging sink has yet to read from the spool (0 when attached)."""
        catch_up = self.catch_ups.get(name)
        current = self.spool.current
        if catch_up is None or current is None or current.tail_seq is None:
            return 0
        boot_id, seq = catch_up.position
        lag = current.tail_seq - seq if boot_id == current.boot_id else current.tail_seq + 1
        return max(0, lag)


def _already_set_aside(raw: bytes, error: Exception, seq: int | None) -> None:  # noqa: ARG001
    """A record failing again as a lagging sink re-reads it: dead-lettered when it was read."""
    log.debug("record_failed_again", seq=seq, error=str(error))
