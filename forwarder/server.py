"""The server: prepare, run, drain and shut down one forwarder (uvicorn's shape).

:meth:`Server.prepare` does every check that can fail before reading (state dir,
checkpoints, boot id, the device), so a misconfigured forwarder exits with one clear
line. :meth:`Server.run` starts the sinks' workers and the reader, and ends when the source
ends or on the first SIGTERM/SIGINT (:meth:`request_stop`: drain within
``shutdown_timeout_s``); a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Mapping

import uvloop

from forwarder.config import Config
from forwarder.delivery.checkpoint import Checkpoint, CheckpointStore
from forwarder.delivery.dead_letters import DeadLetterFile, SourceDeadLetterFile
from forwarder.delivery.retry import RetryPolicy
from forwarder.delivery.worker import SinkWorker
from forwarder.encoding.reference import Event, Identity, encode_record
from forwarder.errors import ForwarderError
from forwarder.reader import Reader
from forwarder.routing import Router
from forwarder.sinks.base import Sink, SinkContext
from forwarder.source.bad_input import BadInput
from forwarder.source.boot import clock_offset_now_ns, read_boot_id
from forwarder.source.capture import Capture
from forwarder.source.parser import Record
from forwarder.telemetry.events import Emitter
from forwarder.telemetry.gauges import GaugeSampler
from forwarder.telemetry.health import Health
from forwarder.telemetry.metrics import Metrics

CLOSE_TIMEOUT_S = 5.0


def build_sinks(config: Config) -> dict[str, Sink]:
    """Create every configured sink."""
    context = SinkContext(host=config.host, state_dir=config.state_dir)
    return {name: table.build(name, context) for name, table in config.sinks.items()}


class Server:
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
        self.emit = Emitter(self.metrics)
        self._encode = encode
        self._bad_input = BadInput(self.emit, SourceDeadLetterFile(config.state_dir))
        self._sinks = dict(sinks) if sinks is not None else build_sinks(config)
        self._clock_offset_ns = clock_offset_ns
        self._store = CheckpointStore(config.state_dir)
        self._workers: dict[str, SinkWorker] = {}
        self._router: Router | None = None
        self._capture: Capture | None = None
        self._reader: Reader | None = None
        self._stop_requested = asyncio.Event()
        self.started_reading = False

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
                emit=self.emit,
                clock_offset_ns=offset,
            )
            checkpoint = checkpoints[name]
            if checkpoint is not None and checkpoint.boot_id == boot_id:
                self._workers[name].health.checkpoint_seq = checkpoint.seq
                self.emit.checkpoint(name, checkpoint.seq)
        seek_newest = self.config.source.start_at == "newest" and all(
            checkpoint is None for checkpoint in checkpoints.values()
        )
        self._capture = Capture(self.config.source, seek_newest=seek_newest)
        self._capture.open()
        self._reader = Reader(
            self._capture,
            self._router,
            self._workers,
            emit=self.emit,
            bad_input=self._bad_input,
            encode=self._encode,
            stop_requested=self._stop_requested,
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

    def _boot_clock_offset(self, boot_id: str, checkpoints: dict[str, Checkpoint | None]) -> int:
        """The boot's stored clock offset (same timestamps on every send), else now's."""
        current = self._clock_offset_ns()
        for checkpoint in checkpoints.values():
            if checkpoint is not None and checkpoint.boot_id == boot_id:
                drift = current - checkpoint.clock_offset_ns
                self.emit.boot_clock_offset_checked(drift)
                return checkpoint.clock_offset_ns
        return current

    # -- running --------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop capturing; run() then drains what is buffered and returns."""
        if not self._stop_requested.is_set():
            self.emit.stopping()
            self._stop_requested.set()
            if self._capture is not None:
                self._capture.request_stop()

    async def _run(self) -> None:
        assert self._capture is not None
        assert self._router is not None
        assert self._reader is not None
        server = None
        workers: set[asyncio.Task[None]] = set()
        reader: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            if self.config.metrics.listen:
                from forwarder.telemetry.status_server import StatusServer  # noqa: PLC0415 - aiohttp on use

                health = Health(self.config.metrics, self._capture, self._reader, self._workers)
                server = StatusServer(
                    self.config.metrics.listen,
                    self.metrics,
                    healthy=health.health,
                    ready=health.readiness,
                )
                await server.start()
            await self._capture.attach()
            for name, items in self._router.startup_items().items():
                if items:
                    await self._workers[name].batcher.put(items)
            for sink, reason in self._router.drain_gap_reports():
                self.emit.gap_emitted(sink, reason)
            workers = {
                asyncio.create_task(worker.run(), name=f"sink-{name}")
                for name, worker in self._workers.items()
            }
            sampler = GaugeSampler(
                self.metrics,
                self._workers,
                self._capture,
                self._router,
                self._reader,
                self._clock_offset_ns,
            )
            watcher = asyncio.create_task(sampler.run())
            reader = asyncio.create_task(self._reader.run(), name="reader")
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
                self.emit.shutdown_timeout(self.config.shutdown_timeout_s)
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

    @property
    def source_ended(self) -> bool:
        """True once the dump or FIFO read has ended."""
        return self._reader is not None and self._reader.source_ended

    def run(self) -> None:
        """Run the server in a new uvloop event loop (call prepare() first)."""
        uvloop.run(self.serve())

    async def serve(self) -> None:
        """Run until the source ends or a signal stops it; a second signal exits at once."""
        loop = asyncio.get_running_loop()
        signals_seen = 0

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen > 1:
                self.emit.second_signal(signal.Signals(signum).name)
                os._exit(128 + signum)
            self.request_stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await self._run()
        self.emit.stopped(source_ended=self.source_ended)
