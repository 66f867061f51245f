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
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from forwarder.config import Config
from forwarder.delivery.checkpoint import Checkpoint, CheckpointStore
from forwarder.delivery.dead_letters import DeadLetterFile, SourceDeadLetterFile
from forwarder.delivery.retry import RetryPolicy
from forwarder.delivery.worker import SinkWorker
from forwarder.encoding.chunk import ChunkEncoder
from forwarder.encoding.reference import Event, Identity, encode_record
from forwarder.errors import ForwarderError, RecordParseError, StateError
from forwarder.routing import Item, Router
from forwarder.sinks.base import Sink, SinkContext
from forwarder.source.bad_input import BadInput
from forwarder.source.capture import Capture, Frame, Window
from forwarder.source.capture_process import FrameKind
from forwarder.source.parser import Record, facility_name, level_name
from forwarder.telemetry.metrics import Metrics

log = structlog.get_logger("forwarder.pipeline")
CLOCK_CHECK_INTERVAL_S = 30.0
CLOCK_DRIFT_WARN_NS = 1_000_000_000
CLOSE_TIMEOUT_S = 5.0


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
        self._store = CheckpointStore(config.state_dir)
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
        identity = Identity(self.config.host, boot_id, offset)
        self._router = Router(
            identity,
            checkpoints,
            min_level=self.config.source.min_level,
            now_ns=time.time_ns,
        )
        retry = RetryPolicy(self.config.retry)
        for name, sink in self._sinks.items():
            table = self.config.sinks.get(name)
            batch_config = table.batch if table is not None and table.batch else self.config.batch
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
            checkpoint is None for checkpoint in checkpoints.values()
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
        )

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
            for sink, reason in self._router.drain_gap_reports():
                self.metrics.gap_events.labels(sink, reason).inc()
            workers = {
                asyncio.create_task(worker.run(), name=f"sink-{name}")
                for name, worker in self._workers.items()
            }
            watcher = asyncio.create_task(self._watch_gauges())
            reader = asyncio.create_task(self._read(), name="reader")
            self.started_reading = True
            await self._until_drained(reader, workers)
        finally:
            tasks = [task for task in [watcher, reader, *workers] if task is not None]
            for task in tasks:
                task.cancel()
            # Let the workers close their sinks (bounded: a stuck close must not hang exit).
            if tasks:
                await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT_S)
            self._capture.stop()
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
        for worker in self._workers.values():
            await worker.batcher.close()
        await asyncio.gather(*workers)

    async def _read(self) -> None:
        assert self._capture is not None
        assert self._router is not None
        router = self._router
        sink_names = list(self._workers)
        while True:
            window = await self._capture.read_window()
            if not (window.records or window.controls):
                if not (self._stop_requested.is_set() or self.source_ended):
                    raise ForwarderError(
                        f"the capture process ended unexpectedly (exit code "
                        f"{self._capture.exit_code}); restart the forwarder"
                    )
                return
            out: dict[str, list[Item]] = {name: [] for name in sink_names}
            self._route_window(window, router, out)
            for name, items in out.items():
                if items:
                    await self._workers[name].batcher.put(items)

    def _route_window(self, window: Window, router: Router, out: dict[str, list[Item]]) -> None:
        for frame in window.controls:
            self._control_frame(frame)
        raws = window.records
        if self._encoder is None or self._encoder.identity is not router.identity:
            self._encoder = ChunkEncoder(router.identity, self._encode)
        chunk = self._encoder.encode(raws, self._parse_error, self._bad_input.failed)
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
            if time.monotonic() - last_clock_check > CLOCK_CHECK_INTERVAL_S and self._router:
                last_clock_check = time.monotonic()
                drift = self._clock_offset_ns() - self._router.identity.clock_offset_ns
                self.metrics.clock_offset_drift.set(drift / 1e9)

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
        return not failing, {"failing_sinks": failing}
