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
from forwarder.spool.fanout import CheckpointTracker, SharedRouter
from forwarder.spool.reader import SpoolReader
from forwarder.spool.spool import Spool
from forwarder.telemetry.events import Emitter

log = structlog.get_logger("forwarder.spool")
CATCH_UP_RECORDS: Final = 2048
CATCH_UP_IDLE_S: Final = 0.05
HOUSEKEEPING_S: Final = 1.0
FAILING_CHECK_S: Final = 0.05  # how often a reader waiting on a full queue checks its sink
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
        # Per sink lagging at start: the spool's newest record then; the live stage makes
        # their kernel events above it, their catch-up those of what the spool held before.
        self.live_events_from: dict[str, int] = {}
        self.workers: dict[str, SinkWorker] = {}
        self.catch_ups: dict[str, SinkCatchUp] = {}  # lagging sinks
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._queued: dict[str, tuple[str, int]] = {}  # per sink: last position queued live
        self._lag_records: dict[str, int] = {}
        self.fresh: set[str] = set()  # sinks with no position yet
        self._starts: dict[str, tuple[str, int]] = {}  # new sinks' start positions, to save
        self.reading_done = False
        self._evicted_counted = 0
        self._corrupt_counted: set[tuple[str, int, int]] = set()

    # -- start-up --------------------------------------------------------------------

    def plan(self, checkpoints: dict[str, Checkpoint | None]) -> dict[str, Checkpoint | None]:
        """Sinks the spool holds more for start lagging; the others (returned) start live.

        A new sink starting at the oldest record while the spool holds records gets its
        start position persisted now: a restart before it delivers anything resumes there.
        """
        spool = self.spool
        live: dict[str, Checkpoint | None] = {}
        for name, checkpoint in checkpoints.items():
            position = None if checkpoint is None else (checkpoint.boot_id, checkpoint.seq)
            if position is None and self._start_at == "oldest":
                oldest = next((b for b in spool.boots if b.oldest_seq() is not None), None)
                if oldest is not None:
                    first = oldest.oldest_seq()
                    assert first is not None
                    position = (oldest.boot_id, first - 1)
                    self._starts[name] = position  # saved by its worker once running
            if position is None:
                self.fresh.add(name)
                live[name] = checkpoint
                continue
            if SpoolReader(spool, *position).read(1):
                updated_at = checkpoint.updated_at if checkpoint is not None else ""
                tail = spool.current.tail_seq if spool.current is not None else None
                self.live_events_from[name] = -1 if tail is None else tail
                self.catch_ups[name] = self._new_catch_up(name, position, updated_at)
            else:
                live[name] = checkpoint
                self._queued[name] = position
        return live

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
            classify_through=(current.boot_id, self.live_events_from.get(name, -1)),
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
            if not await self._put_live(name, items):
                self._detach(name).hold(items)
                continue
            self._queued[name] = (items[-1].boot_id, items[-1].checkpoint_seq)

    async def _put_live(self, name: str, items: list[Item]) -> bool:
        """Queue items for an attached sink; False if it fails while its queue is full.

        A healthy sink that is full makes the reader wait (backpressure); one that starts
        failing meanwhile is detached instead, or it would hold every other sink back.
        """
        batcher = self.workers[name].batcher
        if not batcher.queue.full():
            batcher.put_nowait(items)
            return True
        put = asyncio.ensure_future(batcher.put(items))
        try:
            while not put.done():
                await asyncio.wait({put}, timeout=FAILING_CHECK_S)
                if not put.done() and self._failing(name):
                    put.cancel()  # asyncio.Queue.put leaves nothing behind when cancelled
                    await asyncio.wait({put})
                    if put.cancelled():
                        return False
        finally:
            if not put.done():
                put.cancel()
        put.result()
        return True

    def _failing(self, name: str) -> bool:
        return self.workers[name].health.failing_since is not None

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
        """A failing sink with a few batches (or a full queue) waiting: the rest waits spooled."""
        batcher = self.workers[name].batcher
        backed_up = batcher.depth >= self._lag_records[name] or batcher.queue.full()
        return backed_up and self._failing(name)

    # -- lagging sinks ----------------------------------------------------------------

    def _start_catch_up(self, name: str) -> None:
        running = self._tasks.get(name)
        assert running is None or running.done(), f"a second catch-up for sink {name}"
        self._tasks[name] = asyncio.create_task(self._catch_up(name), name=f"catch-up-{name}")

    def tasks(self) -> list[asyncio.Task[None]]:
        """The running catch-up tasks."""
        return list(self._tasks.values())

    async def _catch_up(self, name: str) -> None:
        """Feed a lagging sink from the spool until it has caught up, then attach it again."""
        try:
            await self._catch_up_loop(name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("catch_up_failed", sink=name)
            raise

    async def _catch_up_loop(self, name: str) -> None:
        catch_up = self.catch_ups[name]
        batcher = self.workers[name].batcher
        router = self.router
        assert router is not None
        while True:
            if self._backed_up(name):
                await asyncio.sleep(CATCH_UP_IDLE_S)  # the sink is down: read no further
                continue
            self.flush()  # the cursor must see every record the live path has routed
            items = catch_up.next_items(CATCH_UP_RECORDS)
            self._count_gaps(name, catch_up)
            if items:
                await batcher.put(self._select(name, items))  # the kinds the sink takes
                continue
            if items is not None:
                continue  # entries that meant nothing to send (set aside, filtered)
            if self.reading_done:  # the drain: what the live path held for it goes first
                pending = catch_up.finish(router.identity)
                self._count_gaps(name, catch_up)
                if pending:
                    await batcher.put(self._select(name, pending))
                await batcher.close()
                return
            if batcher.queue.qsize() < batcher.queue.maxsize // 2:
                boot_id, _ = catch_up.position
                if boot_id == router.identity.boot_id or self._boot_done(boot_id):
                    # From the check to the attach nothing awaits: no record can slip between.
                    pending = catch_up.finish(router.identity)
                    self._count_gaps(name, catch_up)
                    if pending:  # the queue has room (checked above): no await, no interleaving
                        batcher.put_nowait(self._select(name, pending))
                    _, seq = catch_up.position
                    router.attach(name, seq)
                    self._queued[name] = (router.identity.boot_id, seq)
                    del self.catch_ups[name]
                    self._tasks.pop(name, None)
                    log.info("sink_caught_up", sink=name, seq=seq)
                    return
            await asyncio.sleep(CATCH_UP_IDLE_S)

    def _boot_done(self, boot_id: str) -> bool:
        """True when the spool holds nothing more of ``boot_id`` (an older boot)."""
        return self.spool.boot(boot_id) is not self.spool.current

    def _count_gaps(self, name: str, catch_up: SinkCatchUp) -> None:
        emit = self._emit
        for reason, lost_range in catch_up.gap_reports:
            emit.gap_emitted(name, reason)
            # A quarantined range is counted once, however many sinks are told about it
            # (spool_full is counted when evicted, from the spool's own figure).
            if reason == "spool_corrupt" and lost_range not in self._corrupt_counted:
                assert lost_range is not None
                self._corrupt_counted.add(lost_range)
                _, first, last = lost_range
                emit.records_lost(reason, first, last, last - first + 1)
        catch_up.gap_reports.clear()

    # -- housekeeping ----------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Once a second: the interval fsync, disk retries, release, eviction counts."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self.flush()
            self.spool.tick()
            self.release()
            evicted = self.spool.stats.evicted_records
            if evicted > self._evicted_counted and self._emit.metrics is not None:
                lost = evicted - self._evicted_counted
                self._emit.metrics.records_lost.labels("spool_full").inc(lost)
            self._evicted_counted = evicted

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
