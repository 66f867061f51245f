"""The reader: windows of the capture stream become chunks routed to every sink's batcher.

Each window read from the pipe (raw records, split in one call) is encoded once
(``ChunkEncoder``) and routed (``Router``) into per-sink lists of chunk slices, standalone
events and filtered positions that go to each sink's batcher; control frames (overrun,
rejected, too large, end, error) are counted or end the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from forwarder.delivery.worker import SinkWorker
from forwarder.encoding.chunk import Chunk, ChunkEncoder
from forwarder.encoding.reference import Event, Identity
from forwarder.errors import ForwarderError, RecordParseError
from forwarder.kernel_events.stage import KernelEventStage
from forwarder.routing import Item, Router
from forwarder.source.bad_input import BadInput
from forwarder.source.capture import Capture, Frame, Window
from forwarder.source.capture_process import FrameKind
from forwarder.source.parser import Record
from forwarder.spool.feeds import SpoolFeeds
from forwarder.telemetry.events import Emitter


class Reader:
    """Reads frames until the source ends or capture stops; routes every record."""

    def __init__(
        self,
        capture: Capture,
        router: Router,
        workers: dict[str, SinkWorker],
        *,
        emit: Emitter,
        bad_input: BadInput,
        encode: Callable[[Record, Identity], Event],
        stop_requested: asyncio.Event,
        kernel_events: KernelEventStage,
        feeds: SpoolFeeds | None = None,
    ) -> None:
        self._feeds = feeds
        self._capture = capture
        self._router = router
        self._workers = workers
        self._emit = emit
        self._bad_input = bad_input
        self._encode = encode
        self._stop_requested = stop_requested
        self._kernel_events = kernel_events
        self.source_ended = False
        self._last_seq_read = -1
        self._encoder: ChunkEncoder | None = None

    @property
    def last_seq_read(self) -> int:
        """Seq of the newest record read (-1 before the first)."""
        return self._last_seq_read

    async def run(self) -> None:
        """Hand each sink its start-up gap, then read and route until the input ends."""
        router = self._router
        feeds = self._feeds
        for name, items in router.startup_items().items():
            if items:
                await self._workers[name].batcher.put(self._kernel_events.select(name, items))
                if feeds is not None:
                    feeds.startup_queued(name, items)
        for sink, reason in router.drain_gap_reports():
            self._emit.gap_emitted(sink, reason)
        sink_names = list(self._workers)
        while True:
            window = await self._capture.read_window()
            if not (window.records or window.controls):
                await self._kernel_events.close()
                if not (self._stop_requested.is_set() or self.source_ended):
                    raise ForwarderError(
                        f"the capture process ended unexpectedly (exit code "
                        f"{self._capture.exit_code}); restart the forwarder"
                    )
                return
            async with self._kernel_events.handing_out():
                out: dict[str, list[Item]] = {name: [] for name in sink_names}
                chunk, spooled = self._encode_window(window, router)
                if feeds is not None:
                    # Spooled first: a sink that is detached below finds these records there.
                    await feeds.append(chunk, spooled)
                self._route_chunk(chunk, window.records, router, out)
                await self.put(out)
            # Not kept while waiting for the next read: an idle forwarder would hold the last
            # window's records and their chunk (a few hundred KiB after the ring's backlog).
            del window, out, chunk, spooled

    async def put(self, out: dict[str, list[Item]]) -> None:
        """Queue each sink's items (waits while a sink is behind: backpressure)."""
        if self._feeds is not None:  # a lagging sink's items wait for its spool cursor
            await self._feeds.deliver(out)
            return
        for name, items in out.items():
            if items:
                await self._workers[name].batcher.put(items)

    def _encode_window(self, window: Window, router: Router) -> tuple[Chunk, list[bytes]]:
        """The window's chunk, and the raw records it holds (parse errors left out)."""
        for frame in window.controls:
            self._control_frame(frame)
        raws = window.records
        if self._encoder is None or self._encoder.identity is not router.identity:
            self._encoder = ChunkEncoder(router.identity, self._encode)
        refused: list[bytes] = []

        def parse_error(raw: bytes, error: RecordParseError) -> None:
            refused.append(raw)
            self._parse_error(raw, error)

        chunk = self._encoder.encode(raws, parse_error, self._bad_input.failed)
        if not refused:  # the usual: no copy
            return chunk, raws
        ids = {id(raw) for raw in refused}
        return chunk, [raw for raw in raws if id(raw) not in ids]

    def _route_chunk(
        self, chunk: Chunk, raws: list[bytes], router: Router, out: dict[str, list[Item]]
    ) -> None:
        emit = self._emit
        for gap in self._kernel_events.route(chunk, raws, router, out, end=self.source_ended):
            emit.records_lost(gap.reason, gap.first_seq, gap.last_seq, gap.lost)
        emit.records_read(chunk.prefixes)
        if chunk.seqs:
            last_seq = chunk.seqs[-1]
            emit.last_seq_read(last_seq)
            self._last_seq_read = last_seq
        for sink, reason in router.drain_gap_reports():
            emit.gap_emitted(sink, reason)

    def _control_frame(self, frame: Frame) -> None:
        if frame.kind is FrameKind.OVERRUN:
            self._emit.overrun()
        elif frame.kind is FrameKind.REJECTED:
            self._bad_input.rejected(frame.payload)
        elif frame.kind is FrameKind.TOO_LARGE:
            self._emit.record_too_large()
        elif frame.kind is FrameKind.END:
            self.source_ended = True
        elif frame.kind is FrameKind.ERROR:
            raise ForwarderError(frame.payload.decode(errors="replace"))

    def _parse_error(self, raw: bytes, error: RecordParseError) -> None:  # noqa: ARG002
        self._emit.parse_error(error)
