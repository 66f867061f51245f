"""The server: prepare, run, drain and shut down one forwarder (uvicorn's shape).

- :meth:`Server.prepare` does every check that can fail before reading (state dir,
  checkpoints, boot id, the device) and starts the capture process, so a misconfigured
  forwarder exits with one clear line and nothing half-started.
- :meth:`Server.serve` starts the status server (if ``[metrics] listen``), the sinks' workers
  and the reader, and runs until the source ends.
- The first SIGTERM/SIGINT drains: capture stops reading, and what it had read is delivered
  and checkpointed within ``shutdown_timeout_s``. A second one cuts the drain short.
- Shutdown always runs, however the run ended: tasks cancelled (each worker closes its sink),
  the capture process ended by its pid, the status server stopped.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import uvloop

from forwarder.config import Config
from forwarder.delivery.checkpoint import Checkpoint
from forwarder.delivery.dead_letters import DeadLetterFile, SourceDeadLetterFile
from forwarder.delivery.retry import RetryPolicy
from forwarder.delivery.selection import EventSelection
from forwarder.delivery.worker import SinkWorker
from forwarder.encoding.reference import Event, Identity, encode_record
from forwarder.errors import ForwarderError
from forwarder.kernel_events.stage import KernelEventStage
from forwarder.reader import Reader
from forwarder.routing import Router
from forwarder.sinks.base import Sink, SinkContext
from forwarder.source.bad_input import BadInput
from forwarder.source.boot import boot_clock_offset, clock_offset_now_ns, read_boot_id
from forwarder.source.capture import Capture
from forwarder.source.parser import Record
from forwarder.spool.fanout import CheckpointTracker, SharedRouter
from forwarder.spool.feeds import SpoolFeeds
from forwarder.spool.spool import Spool
from forwarder.telemetry.events import Emitter

if TYPE_CHECKING:
    from forwarder.telemetry.metrics import Metrics
    from forwarder.telemetry.status_server import StatusServer

HANDLED_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
CLOSE_TIMEOUT_S: Final = 5.0  # a stuck sink close must not hang the exit


def build_sinks(config: Config) -> dict[str, Sink]:
    """Create every configured sink."""
    context = SinkContext(host=config.host, state_dir=config.state_dir)
    return {name: table.build(name, context) for name, table in config.sinks.items()}


class Server:
    """One forwarder instance.

    ``metrics``: what events count into; by default a new registry when ``[metrics] listen``
    is set, else none (nothing could read them, and prometheus_client stays unloaded).
    """

    def __init__(
        self,
        config: Config,
        sinks: Mapping[str, Sink] | None = None,
        *,
        metrics: Metrics | None = None,
        clock_offset_ns: Callable[[], int] = clock_offset_now_ns,
        encode: Callable[[Record, Identity], Event] = encode_record,
    ) -> None:
        self.config = config
        if metrics is None and config.metrics.listen:
            from forwarder.telemetry.metrics import Metrics  # noqa: PLC0415 - only with a listener

            metrics = Metrics()
        self.metrics = metrics
        self.emit = Emitter(metrics)
        self._encode = encode
        self._bad_input = BadInput(self.emit, SourceDeadLetterFile(config.state_dir))
        self._sinks = dict(sinks) if sinks is not None else build_sinks(config)
        self._clock_offset_ns = clock_offset_ns
        self._store = CheckpointTracker(config.state_dir)
        self._feeds: SpoolFeeds | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._workers: dict[str, SinkWorker] = {}
        self._capture: Capture | None = None
        self._reader: Reader | None = None
        self._clock_offset = 0
        self._stop_requested = asyncio.Event()
        self._force_exit = asyncio.Event()
        self._exit_code = 0
        self._reader_task: asyncio.Task[None] | None = None
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._sampler_task: asyncio.Task[None] | None = None
        self._kernel_events: KernelEventStage | None = None
        self._idle_flush_task: asyncio.Task[None] | None = None
        self._status_server: StatusServer | None = None
        self.started_reading = False

    @property
    def capture_pid(self) -> int | None:
        """Pid of the capture process, once prepared."""
        return self._capture.pid if self._capture is not None else None

    @property
    def source_ended(self) -> bool:
        """True once the dump or FIFO read has ended."""
        return self._reader is not None and self._reader.source_ended

    # -- prepare ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Check everything that can fail before reading; open the source, start capture."""
        self._store.prepare()
        checkpoints = {name: self._store.load(name) for name in self._sinks}
        boot_id = read_boot_id(self.config.source.boot_id_path)
        offset, drift = boot_clock_offset(boot_id, checkpoints.values(), self._clock_offset_ns())
        if drift is not None:
            self.emit.boot_clock_offset_checked(drift)
        live: dict[str, Checkpoint | None] = dict(checkpoints)
        if self.config.spool.enabled:
            offset, live = self._open_spool(boot_id, offset, checkpoints)
        self._clock_offset = offset
        identity = Identity(self.config.host, boot_id, offset)
        router_type = Router if self._feeds is None else SharedRouter
        router = router_type(
            identity,
            live,
            # a plain int: the router compares it per record, where an int subclass is slower
            min_level=int(self.config.source.min_level),
            now_ns=time.time_ns,
        )
        self._kernel_events = self._kernel_event_stage(identity, checkpoints)
        retry = RetryPolicy(self.config.retry)
        max_records: dict[str, int] = {}
        for name, sink in self._sinks.items():
            table = self.config.sinks.get(name)
            batch_config = table.batch if table is not None and table.batch else self.config.batch
            max_records[name] = batch_config.max_records
            self._workers[name] = SinkWorker(
                sink,
                batch_config,
                store=self._store,
                retry=retry,
                dead_letters=DeadLetterFile(self.config.state_dir, name),
                emit=self.emit,
                clock_offset_ns=offset,
            )
            checkpoint = checkpoints[name]
            if checkpoint is not None and checkpoint.boot_id == boot_id:
                self._workers[name].health.checkpoint_seq = checkpoint.seq
                self.emit.checkpoint(name, checkpoint.seq)
        lagging = self._feeds.catch_ups if self._feeds is not None else {}
        if self._feeds is not None:
            assert isinstance(router, SharedRouter)
            self._feeds.attach_server(router, self._workers, max_records, self._kernel_events)
        seek_newest = self.config.source.start_at == "newest" and all(
            checkpoint is None and name not in lagging for name, checkpoint in checkpoints.items()
        )
        self._capture = Capture(self.config.source, seek_newest=seek_newest)
        self._capture.open()
        self._reader = Reader(
            self._capture,
            router,
            self._workers,
            emit=self.emit,
            bad_input=self._bad_input,
            encode=self._encode,
            stop_requested=self._stop_requested,
            kernel_events=self._kernel_events,
            feeds=self._feeds,
        )
        self.emit.started(
            source=str(self.config.source.path),
            boot_id=boot_id,
            sinks=self._sinks,
            capture_pid=self._capture.pid,
            resume={
                n: (c.seq if c and c.boot_id == boot_id else None) for n, c in checkpoints.items()
            },
        )

    def _open_spool(
        self, boot_id: str, offset: int, checkpoints: dict[str, Checkpoint | None]
    ) -> tuple[int, dict[str, Checkpoint | None]]:
        """Open (recover) the spool; return the boot's offset and the sinks that start live.

        The offset stored with the boot's segments wins: a record re-sent from the spool
        gets the ``@timestamp`` it had.
        """
        spool = Spool(self.config.spool, self.config.spool_path)
        spool.open(boot_id, offset)
        self._feeds = SpoolFeeds(
            spool,
            self._store,
            host=self.config.host,
            start_at=self.config.source.start_at,
            min_level=int(self.config.source.min_level),
            encode=self._encode,
            on_parse_error=lambda _raw, error: self.emit.parse_error(error),
            emit=self.emit,
        )
        return spool.clock_offset_ns(boot_id) or offset, self._feeds.plan(checkpoints)

    def _kernel_event_stage(
        self, identity: Identity, checkpoints: Mapping[str, Checkpoint | None]
    ) -> KernelEventStage:
        """The classifier for this run: each sink's resume point and event selection."""
        resume = {
            name: None if c is None else c.seq if c.boot_id == identity.boot_id else -1
            for name, c in checkpoints.items()
        }
        selections = {
            name: EventSelection.of(table.events, table.kernel_event_classes)
            for name, table in self.config.sinks.items()
            if name in self._sinks
        }
        lines_only = [name for name, sink in self._sinks.items() if sink.reads_lines_only]
        return KernelEventStage(
            self.config.kernel_events,
            identity,
            resume,
            selections,
            self.emit,
            lines_only=lines_only,
            spooled_through=None if self._feeds is None else self._feeds.spooled_through,
        )

    def _live_source(self) -> bool:
        """A device or FIFO, or a followed file: reports may wait for records that never come."""
        source = self.config.source
        return source.follow or not source.path.is_file()

    # -- run -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve in a new uvloop event loop (call prepare() first); return the exit code."""
        return uvloop.run(self.serve())

    async def serve(self) -> int:
        """Run until the source ends or a signal stops it; 0, or 128 + signal if forced."""
        loop = asyncio.get_running_loop()
        for signum in HANDLED_SIGNALS:
            loop.add_signal_handler(signum, self.handle_exit, signum)
        try:
            await self._startup()
            await self._main_loop()
        finally:
            await self._shutdown()
            for signum in HANDLED_SIGNALS:
                loop.remove_signal_handler(signum)
        self.emit.stopped(source_ended=self.source_ended)
        return self._exit_code

    def handle_exit(self, signum: int) -> None:
        """SIGTERM/SIGINT: the first drains, the second cuts the drain short."""
        if not self._stop_requested.is_set():
            self.request_stop()
        elif not self._force_exit.is_set():
            self.emit.second_signal(signal.Signals(signum).name)
            self._exit_code = 128 + signum
            self._force_exit.set()

    def request_stop(self) -> None:
        """Stop capturing; the run then drains what is buffered and returns."""
        if not self._stop_requested.is_set():
            self.emit.stopping()
            self._stop_requested.set()
            if self._capture is not None:
                self._capture.request_stop()

    async def _startup(self) -> None:
        assert self._capture is not None
        assert self._reader is not None
        if self.config.metrics.listen:
            await self._start_status_server(self.config.metrics.listen)
        await self._capture.attach()
        self._worker_tasks = [
            asyncio.create_task(worker.run(), name=f"sink-{name}")
            for name, worker in self._workers.items()
        ]
        if self._feeds is not None:
            self._feeds.start()
            self._housekeeping_task = asyncio.create_task(
                self._feeds.housekeeping(), name="spool-housekeeping"
            )
        if self.metrics is not None:
            from forwarder.telemetry.gauges import GaugeSampler  # noqa: PLC0415 - with metrics only

            sampler = GaugeSampler(
                self.metrics,
                self._workers,
                self._capture,
                self._reader,
                clock_offset_ns=self._clock_offset,
                clock_offset_now_ns=self._clock_offset_ns,
                feeds=self._feeds,
            )
            self._sampler_task = asyncio.create_task(sampler.run(), name="gauges")
        self._reader_task = asyncio.create_task(self._reader.run(), name="reader")
        if self._kernel_events is not None and self._live_source():
            flush = self._kernel_events.flush_when_idle(self._reader.put, list(self._workers))
            self._idle_flush_task = asyncio.create_task(flush, name="kernel-events-idle")
        self.started_reading = True

    async def _start_status_server(self, listen: str) -> None:
        assert self._capture is not None
        assert self._reader is not None
        assert self.metrics is not None
        # aiohttp loads only for a listener.
        from forwarder.telemetry.health import Health  # noqa: PLC0415
        from forwarder.telemetry.status_server import StatusServer  # noqa: PLC0415

        health = Health(
            self.config.metrics, self._capture, self._reader, self._workers, feeds=self._feeds
        )
        server = StatusServer(listen, self.metrics, healthy=health.health, ready=health.readiness)
        await server.start()
        self._status_server = server

    async def _main_loop(self) -> None:
        """Wait for the end of input and every sink to deliver what it holds.

        After a stop request all of it must finish within ``shutdown_timeout_s``: a sink that
        is down may hold the reader (a full queue) and the drain forever otherwise. A second
        signal ends the wait at once.
        """
        body = asyncio.create_task(self._read_then_drain())
        stop = asyncio.create_task(self._stop_requested.wait())
        force = asyncio.create_task(self._force_exit.wait())
        try:
            await asyncio.wait({body, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not body.done():
                await asyncio.wait(
                    {body, force},
                    timeout=self.config.shutdown_timeout_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if force.done() and not body.done():
                return
            if not body.done():
                self.emit.shutdown_timeout(self.config.shutdown_timeout_s)
                return
            body.result()
        finally:
            for task in (body, stop, force):
                task.cancel()

    async def _read_then_drain(self) -> None:
        assert self._reader_task is not None
        reader, workers = self._reader_task, self._worker_tasks
        while not reader.done():
            done, _ = await asyncio.wait({reader, *workers}, return_when=asyncio.FIRST_COMPLETED)
            for finished in done - {reader}:
                finished.result()  # raises the worker's error
                raise ForwarderError(f"{finished.get_name()} stopped unexpectedly")
        reader.result()
        feeds = self._feeds
        if feeds is not None:
            feeds.reading_done = True
            feeds.sync()
        for name, worker in self._workers.items():
            if feeds is None or name not in feeds.catch_ups:  # a lagging one closes when done
                await worker.batcher.close()
        await asyncio.gather(*workers)

    async def _shutdown(self) -> None:
        """Cancel what runs (workers close their sinks), end capture by its pid, stop serving."""
        catch_ups = self._feeds.tasks() if self._feeds is not None else []
        tasks = [
            self._sampler_task,
            self._idle_flush_task,
            self._housekeeping_task,
            self._reader_task,
            *catch_ups,
            *self._worker_tasks,
        ]
        running = [task for task in tasks if task is not None]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=CLOSE_TIMEOUT_S)
        if self._capture is not None:
            self._capture.stop()
        if self._feeds is not None:
            self._feeds.close()
        self._bad_input.flush_log()
        if self._status_server is not None:
            await self._status_server.stop()
