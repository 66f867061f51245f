"""The running forwarder: capture -> parse -> route -> per-sink delivery, and shutdown.

:meth:`Pipeline.prepare` does every check that can fail before reading (state dir,
checkpoints, boot id, the device), so a misconfigured forwarder exits with one clear
line. :meth:`Pipeline.run` reads frames from the capture process, parses and routes each
record to every sink's worker (fan-out), and ends when the source ends or on
:meth:`request_stop` (drain within ``shutdown_timeout_s``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from forwarder.config import Config
from forwarder.delivery.checkpoint import Checkpoint
from forwarder.delivery.dead_letters import DeadLetterFile, SourceDeadLetterFile
from forwarder.delivery.retry import RetryPolicy
from forwarder.delivery.worker import SinkWorker
from forwarder.encoding.chunk import Chunk, ChunkEncoder
from forwarder.encoding.reference import Event, Identity, encode_record
from forwarder.errors import ForwarderError, RecordParseError, StateError
from forwarder.routing import Item, Router
from forwarder.sinks.base import Sink, SinkContext
from forwarder.source.bad_input import BadInput
from forwarder.source.capture import Capture, Frame
from forwarder.source.capture_process import FrameKind
from forwarder.source.parser import Record, facility_name, level_name
from forwarder.spool.fanout import CheckpointTracker, SharedRouter, SinkCatchUp
from forwarder.spool.reader import SpoolReader
from forwarder.spool.spool import Spool
from forwarder.telemetry.metrics import Metrics

log = structlog.get_logger("forwarder.pipeline")
CLOCK_CHECK_INTERVAL_S = 30.0
CLOCK_DRIFT_WARN_NS = 1_000_000_000
CLOSE_TIMEOUT_S = 5.0
CATCH_UP_RECORDS = 2048
LAG_BATCHES = 4  # a failing sink with this many batches queued reads from the spool instead
CATCH_UP_IDLE_S = 0.05
SPOOL_FULL_WAIT_S = 0.1


def clock_offset_now_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, in whole microseconds (the precision of ts_usec).

    Whole microseconds keep ``timestamp_ns`` equal to what ``@timestamp`` says.
    """
    offset = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(
        time.CLOCK_MONOTONIC
    )
    return offset // 1000 * 1000


def read_boot_id(path: Any) -> str:
    """The boot id (a UUID) from ``path``; raise StateError if unreadable."""
    try:
        with open(path, encoding="ascii") as boot_id_file:  # noqa: PTH123 - path may be str
            boot_id = boot_id_file.read().strip()
    except OSError as error:
        raise StateError(f"cannot read boot id from {path}: {error.strerror}") from error
    if not boot_id:
        raise StateError(f"boot id file {path} is empty")
    return boot_id


def _already_set_aside(raw: bytes, error: Exception, seq: int | None) -> None:  # noqa: ARG001
    """A record failing again as a lagging sink re-reads it: dead-lettered when it was read."""
    log.debug("record_failed_again", seq=seq, error=str(error))


def build_sinks(config: Config) -> dict[str, Sink]:
    """Create every configured sink."""
    context = SinkContext(host=config.host, state_dir=config.state_dir)
    return {name: table.build(name, context) for name, table in config.sinks.items()}


class Pipeline:
    """One forwarder instance."""

    def __init__(
        self,
        config: Config,
        sinks: Mapping[str, Sink] | None = None,
        *,
        clock_offset_ns: Callable[[], int] = clock_offset_now_ns,
        encode: Callable[[Record, Identity], Event] = encode_record,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        self._encode = encode
        self._bad_input = BadInput(self.metrics, SourceDeadLetterFile(config.state_dir))
        self._sinks = dict(sinks) if sinks is not None else build_sinks(config)
        self._clock_offset_ns = clock_offset_ns
        self._store = CheckpointTracker(config.state_dir)
        self._spool: Spool | None = None
        self._catch_ups: dict[str, SinkCatchUp] = {}  # lagging sinks: reading the spool
        self._catch_up_tasks: dict[str, asyncio.Task[None]] = {}
        self._lag_records: dict[str, int] = {}
        self._queued: dict[str, tuple[str, int]] = {}  # per sink: last position queued live
        self._fresh: set[str] = set()  # sinks with no position yet (persisted at first record)
        self._reading_done = False
        self._spool_lost_counted = 0
        self._corrupt_counted: set[tuple[str, int, int]] = set()
        self._workers: dict[str, SinkWorker] = {}
        self._router: Router | None = None
        self._capture: Capture | None = None
        self.source_ended = False
        self._stop_requested = asyncio.Event()
        self.started_reading = False
        self._last_seq_read = -1
        self._encoder: ChunkEncoder | None = None

    # -- start-up -------------------------------------------------------------------

    def prepare(self) -> None:
        """Check everything that can fail before reading; open the source."""
        self._store.prepare()
        checkpoints = {name: self._store.load(name) for name in self._sinks}
        boot_id = read_boot_id(self.config.source.boot_id_path)
        offset = self._boot_clock_offset(boot_id, checkpoints)
        live = dict(checkpoints)
        if self.config.spool.enabled:
            self._spool = Spool(self.config.spool, self.config.spool_path)
            self._spool.open(boot_id, offset)
            offset = self._spool.clock_offset_ns(boot_id) or offset
            live = self._plan_catch_ups(checkpoints)
        identity = Identity(self.config.host, boot_id, offset)
        router_type = Router if self._spool is None else SharedRouter
        self._router = router_type(
            identity,
            live,
            min_level=self.config.source.min_level,
            now_ns=time.time_ns,
        )
        retry = RetryPolicy(self.config.retry)
        for name, sink in self._sinks.items():
            table = self.config.sinks.get(name)
            batch_config = table.batch if table is not None and table.batch else self.config.batch
            self._lag_records[name] = LAG_BATCHES * batch_config.max_records
            self._workers[name] = SinkWorker(
                sink,
                batch_config,
                store=self._store,
                retry=retry,
                dead_letters=DeadLetterFile(self.config.state_dir, name),
                metrics=self.metrics,
                clock_offset_ns=offset,
            )
            checkpoint = checkpoints[name]
            if checkpoint is not None and checkpoint.boot_id == boot_id:
                self._workers[name].health.checkpoint_seq = checkpoint.seq
                self.metrics.checkpoint_seq.labels(name).set(checkpoint.seq)
        seek_newest = self.config.source.start_at == "newest" and all(
            checkpoint is None and name not in self._catch_ups
            for name, checkpoint in checkpoints.items()
        )
        self._capture = Capture(self.config.source, seek_newest=seek_newest)
        self._capture.open()
        log.info(
            "started",
            source=str(self.config.source.path),
            boot_id=boot_id,
            sinks=sorted(self._sinks),
            capture_pid=self._capture.pid,
            resume={
                n: (c.seq if c and c.boot_id == boot_id else None) for n, c in checkpoints.items()
            },
            spool_bytes=None if self._spool is None else self._spool.total_bytes(),
            lagging=sorted(self._catch_ups),
        )

    def _plan_catch_ups(
        self, checkpoints: dict[str, Checkpoint | None]
    ) -> dict[str, Checkpoint | None]:
        """Sinks the spool holds more for start lagging; the others (returned) start live.

        A new sink starting at the oldest record while the spool holds records gets its
        start position persisted now: a restart before it delivers anything resumes there.
        """
        spool = self._spool
        assert spool is not None
        live: dict[str, Checkpoint | None] = {}
        for name, checkpoint in checkpoints.items():
            position = None if checkpoint is None else (checkpoint.boot_id, checkpoint.seq)
            if position is None and self.config.source.start_at == "oldest":
                oldest = next((b for b in spool.boots if b.oldest_seq() is not None), None)
                if oldest is not None:
                    first = oldest.oldest_seq()
                    assert first is not None
                    position = (oldest.boot_id, first - 1)
                    self._store.save(name, oldest.boot_id, first - 1, oldest.clock_offset_ns)
            if position is None:
                self._fresh.add(name)
                live[name] = checkpoint
                continue
            if SpoolReader(spool, *position).read(1):
                self._catch_ups[name] = self._new_catch_up(name, position, checkpoint)
            else:
                live[name] = checkpoint
                self._queued[name] = position
        return live

    def _new_catch_up(
        self, name: str, position: tuple[str, int] | None, checkpoint: Checkpoint | None
    ) -> SinkCatchUp:
        assert self._spool is not None
        return SinkCatchUp(
            name,
            self._spool,
            position,
            identity_of=self._identity_of,
            encode=self._encode,
            min_level=self.config.source.min_level,
            on_parse_error=self._parse_error,
            on_failure=_already_set_aside,
            updated_at=checkpoint.updated_at if checkpoint is not None else "",
        )

    def _identity_of(self, boot_id: str) -> Identity:
        """The identity of a boot: its stored clock offset keeps ids and timestamps stable."""
        if self._router is not None and boot_id == self._router.identity.boot_id:
            return self._router.identity
        offset = self._spool.clock_offset_ns(boot_id) if self._spool is not None else None
        return Identity(self.config.host, boot_id, offset or 0)

    def _boot_clock_offset(self, boot_id: str, checkpoints: dict[str, Checkpoint | None]) -> int:
        """The boot's stored clock offset (same timestamps on every send), else now's."""
        current = self._clock_offset_ns()
        for checkpoint in checkpoints.values():
            if checkpoint is not None and checkpoint.boot_id == boot_id:
                drift = current - checkpoint.clock_offset_ns
                self.metrics.clock_offset_drift.set(drift / 1e9)
                if abs(drift) > CLOCK_DRIFT_WARN_NS:
                    log.warning(
                        "clock_offset_changed",
                        drift_s=round(drift / 1e9, 3),
                        hint="suspend or a wall-clock step since this boot's first record was "
                        "shipped; timestamps keep the stored offset so re-sent records match",
                    )
                return checkpoint.clock_offset_ns
        return current

    # -- running --------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop capturing; run() then drains what is buffered and returns."""
        if not self._stop_requested.is_set():
            log.info("stopping")
            self._stop_requested.set()
            if self._capture is not None:
                self._capture.request_stop()

    async def run(self) -> None:
        """Run until the source ends or a stop is requested (call prepare() first)."""
        assert self._capture is not None
        assert self._router is not None
        server = None
        workers: set[asyncio.Task[None]] = set()
        reader: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            if self.config.metrics.listen:
                from forwarder.telemetry.status_server import StatusServer  # noqa: PLC0415 - aiohttp on use

                server = StatusServer(
                    self.config.metrics.listen,
                    self.metrics,
                    healthy=self.health,
                    ready=self.readiness,
                )
                await server.start()
            await self._capture.attach()
            for name, items in self._router.startup_items().items():
                if items:
                    await self._workers[name].batcher.put(items)
                    self._queued[name] = (items[-1].boot_id, items[-1].checkpoint_seq)
            for sink, reason in self._router.drain_gap_reports():
                self.metrics.gap_events.labels(sink, reason).inc()
            workers = {
                asyncio.create_task(worker.run(), name=f"sink-{name}")
                for name, worker in self._workers.items()
            }
            for name in list(self._catch_ups):
                self._start_catch_up(name)
            watcher = asyncio.create_task(self._watch_gauges())
            reader = asyncio.create_task(self._read(), name="reader")
            self.started_reading = True
            await self._until_drained(reader, workers)
        finally:
            catch_ups = list(self._catch_up_tasks.values())
            tasks = [task for task in [watcher, reader, *catch_ups, *workers] if task is not None]
            for task in tasks:
                task.cancel()
            # Let the workers close their sinks (bounded: a stuck close must not hang exit).
            if tasks:
                await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            self._capture.stop()
            if self._spool is not None:
                self._spool.close()
            self._bad_input.flush_log()
            if server is not None:
                await server.stop()

    async def _until_drained(
        self, reader: asyncio.Task[None], workers: set[asyncio.Task[None]]
    ) -> None:
        """Wait for the end of input, then for every sink to deliver what it holds.

        After a stop request all of it must finish within ``shutdown_timeout_s``: a sink that
        is down may hold the reader (a full queue) and the drain forever otherwise.
        """
        body = asyncio.create_task(self._read_then_drain(reader, workers))
        stop = asyncio.create_task(self._stop_requested.wait())
        try:
            await asyncio.wait({body, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not body.done():
                await asyncio.wait({body}, timeout=self.config.shutdown_timeout_s)
            if not body.done():
                log.warning(
                    "shutdown_timeout",
                    timeout_s=self.config.shutdown_timeout_s,
                    hint="undelivered records stay above the checkpoint and are re-read at start",
                )
                return
            body.result()
        finally:
            body.cancel()
            stop.cancel()

    async def _read_then_drain(
        self, reader: asyncio.Task[None], workers: set[asyncio.Task[None]]
    ) -> None:
        while not reader.done():
            done, _ = await asyncio.wait({reader, *workers}, return_when=asyncio.FIRST_COMPLETED)
            for finished in done - {reader}:
                finished.result()  # raises the worker's error
                raise ForwarderError(f"{finished.get_name()} stopped unexpectedly")
        reader.result()
        self._reading_done = True
        if self._spool is not None:
            self._spool.sync()
        for name, worker in self._workers.items():
            if name not in self._catch_ups:  # a lagging sink closes once it has caught up
                await worker.batcher.close()
        await asyncio.gather(*workers)

    async def _read(self) -> None:
        assert self._capture is not None
        assert self._router is not None
        router = self._router
        sink_names = list(self._workers)
        while True:
            frames = await self._capture.read_frames()
            if not frames:
                if not (self._stop_requested.is_set() or self.source_ended):
                    raise ForwarderError(
                        f"the capture process ended unexpectedly (exit code "
                        f"{self._capture.exit_code}); restart the forwarder"
                    )
                return
            out: dict[str, list[Item]] = {name: [] for name in sink_names}
            if self._spool is None:
                self._route_frames(frames, router, out)
                for name, items in out.items():
                    if items:
                        await self._workers[name].batcher.put(items)
                continue
            chunk, raws = self._encode_frames(frames, router)
            await self._spool_append(chunk, raws)
            self._persist_fresh_starts(chunk)
            self._route_chunk(chunk, router, out)
            await self._deliver(out)

    def _route_frames(
        self, frames: Sequence[Frame], router: Router, out: dict[str, list[Item]]
    ) -> None:
        chunk, _ = self._encode_frames(frames, router)
        self._route_chunk(chunk, router, out)

    def _encode_frames(self, frames: Sequence[Frame], router: Router) -> tuple[Chunk, list[bytes]]:
        """The chunk of the record frames, and the raw records it holds (parse errors left out)."""
        raws: list[bytes] = []
        for frame in frames:
            if frame.kind is FrameKind.RECORD:
                raws.append(frame.payload)
            else:
                self._control_frame(frame)
        if self._encoder is None or self._encoder.identity is not router.identity:
            self._encoder = ChunkEncoder(router.identity, self._encode)
        refused: list[bytes] = []

        def parse_error(raw: bytes, error: RecordParseError) -> None:
            refused.append(raw)
            self._parse_error(raw, error)

        chunk = self._encoder.encode(raws, parse_error, self._bad_input.failed)
        if refused:
            ids = {id(raw) for raw in refused}
            raws = [raw for raw in raws if id(raw) not in ids]
        return chunk, raws

    def _route_chunk(self, chunk: Chunk, router: Router, out: dict[str, list[Item]]) -> None:
        for gap in router.route_chunk(chunk, out):
            self.metrics.records_lost.labels(gap.reason).inc(gap.lost)
            log.warning(
                "records_lost",
                reason=gap.reason,
                first_seq=gap.first_seq,
                last_seq=gap.last_seq,
                lost=gap.lost,
            )
        # Counted once per group of frames: per-record metric calls cost more than parsing.
        for prefix, count in Counter(chunk.prefixes).items():
            self.metrics.records_read.labels(
                facility_name(prefix >> 3), level_name(prefix & 7)
            ).inc(count)
        if chunk.seqs:
            last_seq = chunk.seqs[-1]
            self.metrics.last_seq_read.set(last_seq)
            self._last_seq_read = last_seq
        for sink, reason in router.drain_gap_reports():
            self.metrics.gap_events.labels(sink, reason).inc()

    # -- the spool: append once, deliver live or from the spool -------------------------

    async def _spool_append(self, chunk: Chunk, raws: list[bytes]) -> None:
        """Append the chunk's records; while the spool refuses (block, disk and memory full), wait.

        Waiting here is the backpressure that ends at the capture buffer, then the ring.
        """
        spool = self._spool
        assert spool is not None
        if not raws:
            return
        urgent_level = self.config.spool.fsync_min_level
        urgent = any(prefix & 7 <= urgent_level for prefix in chunk.prefixes)
        seqs = chunk.seqs
        levels = [0 if urgent else 7]  # one value: append only looks for the most severe
        taken = spool.append(seqs, raws, levels * len(raws) if urgent else None)
        while taken < len(raws):
            await asyncio.sleep(SPOOL_FULL_WAIT_S)
            self._release_spool()
            spool.tick()
            taken += spool.append(seqs[taken:], raws[taken:], None)

    def _persist_fresh_starts(self, chunk: Chunk) -> None:
        """A sink with no position yet records where it begins: the first record it is given."""
        if not self._fresh or not len(chunk):
            return
        assert self._router is not None
        identity = self._router.identity
        for name in sorted(self._fresh):
            start = chunk.seqs[0] - 1
            self._store.save(name, identity.boot_id, start, identity.clock_offset_ns)
            self._queued[name] = (identity.boot_id, start)
        self._fresh.clear()

    async def _deliver(self, out: dict[str, list[Item]]) -> None:
        """Queue each caught-up sink's items; a failing sink that is backed up starts lagging.

        A healthy sink that is only slower than the reader (a replay, a burst) still holds the
        reader back, as without a spool: sending it from the spool would parse and encode
        every record twice for no gain. A sink that fails never holds anyone back.
        """
        router = self._router
        assert isinstance(router, SharedRouter)
        for name, items in out.items():
            if not items:
                continue
            worker = self._workers[name]
            batcher = worker.batcher
            # A failing sink lags after a few batches (its records wait in the spool, not in
            # memory); a healthy one only when its queue is full.
            if self._backed_up(name):
                router.detach(name)
                position = self._queued.get(name)
                self._catch_ups[name] = self._new_catch_up(name, position, None)
                self._start_catch_up(name)
                log.info("sink_lagging", sink=name, position=position)
                continue
            await batcher.put(items)
            self._queued[name] = (items[-1].boot_id, items[-1].checkpoint_seq)

    def _backed_up(self, name: str) -> bool:
        """A failing sink with a few batches (or a full queue) waiting: the rest waits spooled."""
        worker = self._workers[name]
        batcher = worker.batcher
        failing = worker.health.failing_since is not None
        return failing and (batcher.depth >= self._lag_records[name] or batcher.queue.full())

    def _start_catch_up(self, name: str) -> None:
        self._catch_up_tasks[name] = asyncio.create_task(
            self._catch_up(name), name=f"catch-up-{name}"
        )

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
        catch_up = self._catch_ups[name]
        batcher = self._workers[name].batcher
        router = self._router
        assert isinstance(router, SharedRouter)
        while True:
            if self._backed_up(name):
                await asyncio.sleep(CATCH_UP_IDLE_S)  # the sink is down: read no further
                continue
            items = catch_up.next_items(CATCH_UP_RECORDS)
            self._count_gaps(name, catch_up)
            if items:
                await batcher.put(items)
                continue
            if items is not None:
                continue  # entries that meant nothing to send (set aside, filtered)
            if self._reading_done:
                await batcher.close()
                return
            if batcher.queue.qsize() < batcher.queue.maxsize // 2:
                boot_id, seq = catch_up.position
                if boot_id == router.identity.boot_id or self._spool_boot_done(boot_id):
                    pending = catch_up.finish(router.identity)
                    self._count_gaps(name, catch_up)
                    if pending:
                        await batcher.put(pending)  # returns at once: the queue has room
                    _, seq = catch_up.position
                    router.attach(name, seq)
                    self._queued[name] = (router.identity.boot_id, seq)
                    del self._catch_ups[name]
                    self._catch_up_tasks.pop(name, None)
                    log.info("sink_caught_up", sink=name, seq=seq)
                    return
            await asyncio.sleep(CATCH_UP_IDLE_S)

    def _spool_boot_done(self, boot_id: str) -> bool:
        """True when the spool holds nothing more of ``boot_id`` for anyone."""
        assert self._spool is not None
        return self._spool.boot(boot_id) is not self._spool.current

    def _count_gaps(self, name: str, catch_up: SinkCatchUp) -> None:
        for reason, lost_range in catch_up.gap_reports:
            self.metrics.gap_events.labels(name, reason).inc()
            # A quarantined range is counted once, however many sinks are told about it
            # (spool_full is counted when evicted, from the spool's own figure).
            if reason == "spool_corrupt" and lost_range not in self._corrupt_counted:
                assert lost_range is not None
                self._corrupt_counted.add(lost_range)
                _, first, last = lost_range
                self.metrics.records_lost.labels(reason).inc(last - first + 1)
        catch_up.gap_reports.clear()

    def _release_spool(self) -> None:
        """Delete what every sink has delivered (their checkpoints are the only cursors)."""
        if self._spool is None or self._fresh:
            return
        positions = [self._store.positions.get(name) for name in self._workers]
        if any(position is None for position in positions):
            return
        self._spool.release([p for p in positions if p is not None])

    def _control_frame(self, frame: Frame) -> None:
        if frame.kind is FrameKind.OVERRUN:
            self.metrics.overruns.inc()
        elif frame.kind is FrameKind.REJECTED:
            self._bad_input.rejected(frame.payload)
        elif frame.kind is FrameKind.TOO_LARGE:
            log.warning("record_too_large", hint="a record larger than 16 KiB was lost")
        elif frame.kind is FrameKind.END:
            self.source_ended = True
        elif frame.kind is FrameKind.ERROR:
            raise ForwarderError(frame.payload.decode(errors="replace"))

    def _parse_error(self, raw: bytes, error: RecordParseError) -> None:  # noqa: ARG002
        self.metrics.parse_errors.inc()
        log.warning("parse_error", error=str(error))

    async def _watch_gauges(self) -> None:
        last_clock_check = time.monotonic()
        while True:
            await asyncio.sleep(1)
            newest = self._last_seq_read
            for name, worker in self._workers.items():
                self.metrics.buffer_records.labels(name).set(worker.batcher.depth)
                if worker.health.checkpoint_seq is not None:
                    lag = max(0, int(newest) - worker.health.checkpoint_seq)
                    self.metrics.checkpoint_lag.labels(name).set(lag)
            if self._capture is not None:
                self.metrics.buffer_bytes.set(self._capture.buffered_bytes)
            if self._spool is not None:
                self._spool.tick()
                self._release_spool()
                self._spool_gauges(self._spool)
            if time.monotonic() - last_clock_check > CLOCK_CHECK_INTERVAL_S and self._router:
                last_clock_check = time.monotonic()
                drift = self._clock_offset_ns() - self._router.identity.clock_offset_ns
                self.metrics.clock_offset_drift.set(drift / 1e9)

    def _spool_gauges(self, spool: Spool) -> None:
        metrics, stats = self.metrics, spool.stats
        metrics.spool_bytes.set(spool.total_bytes())
        metrics.spool_segments.set(sum(len(boot.segments) for boot in spool.boots))
        metrics.spool_degraded.set(1 if spool.unwritable else 0)
        metrics.spool_memory_bytes.set(spool.record_bytes_pending())
        current = spool.current
        if current is not None:
            oldest = next((b.oldest_seq() for b in spool.boots if b.oldest_seq() is not None), None)
            metrics.spool_oldest_seq.set(-1 if oldest is None else oldest)
            metrics.spool_newest_seq.set(-1 if current.tail_seq is None else current.tail_seq)
        for name in self._workers:
            catch_up = self._catch_ups.get(name)
            lag = 0
            if catch_up is not None and current is not None and current.tail_seq is not None:
                boot_id, seq = catch_up.position
                lag = current.tail_seq - seq if boot_id == current.boot_id else current.tail_seq + 1
            metrics.spool_lag_records.labels(name).set(max(0, lag))
        for counter, value in (
            (metrics.spool_records_appended, stats.appended_records),
            (metrics.spool_write_errors, stats.write_errors),
            (metrics.spool_truncated_bytes, stats.truncated_bytes),
            (metrics.spool_corrupt_segments, stats.corrupt_segments),
            (metrics.spool_fsyncs, stats.fsyncs),
            (metrics.spool_fsync_seconds, stats.fsync_seconds),
        ):
            counter.inc(max(0, value - counter._value.get()))  # noqa: SLF001 - mirror a total
        lost = stats.evicted_records - self._spool_lost_counted
        if lost > 0:
            metrics.records_lost.labels("spool_full").inc(lost)
            self._spool_lost_counted = stats.evicted_records

    # -- health ---------------------------------------------------------------------

    def health(self) -> tuple[bool, Mapping[str, Any]]:
        """Alive while capture runs (or the dump it read has ended)."""
        running = self._capture is not None and (self._capture.running or self.source_ended)
        return running, {"capture_running": running}

    def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        """Ready when no sink has been failing for longer than allowed."""
        now = time.monotonic()
        grace = self.config.metrics.ready_after_failing_s
        failing = {
            name: {
                "error": worker.health.last_error,
                "config_problem": worker.health.config_problem,
                "failing_for_s": round(now - worker.health.failing_since, 3),
            }
            for name, worker in self._workers.items()
            if worker.health.failing_since is not None
            and (worker.health.config_problem or now - worker.health.failing_since >= grace)
        }
        detail: dict[str, Any] = {"failing_sinks": failing}
        spool_ok = True
        if self._spool is not None:
            spool_ok = self._spool.unwritable is None
            detail["spool"] = {
                "degraded": not spool_ok,
                "error": self._spool.unwritable,
                "lagging_sinks": sorted(self._catch_ups),
            }
        return not failing and spool_ok, detail
