"""The reader: frames from the capture process become chunks routed to every sink's batcher.

Each group of frames read from the pipe is encoded once (``ChunkEncoder``) and routed
(``Router``) into per-sink lists that go to each sink's batcher; control frames (overrun,
rejected, too large, end, error) are counted or end the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from forwarder.delivery.worker import SinkWorker
from forwarder.encoding.chunk import Chunk, ChunkEncoder
from forwarder.encoding.reference import Event, Identity
from forwarder.errors import ForwarderError, RecordParseError
from forwarder.routing import Item, Router
from forwarder.source.bad_input import BadInput
from forwarder.source.capture import Capture, Frame
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
        feeds: SpoolFeeds | None = None,
    ) -> None:
        self._capture = capture
        self._feeds = feeds
        self._router = router
        self._workers = workers
        self._emit = emit
        self._bad_input = bad_input
        self._encode = encode
        self._stop_requested = stop_requested
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
                await self._workers[name].batcher.put(items)
                if feeds is not None:
                    feeds.startup_queued(name, items)
        for sink, reason in router.drain_gap_reports():
            self._emit.gap_emitted(sink, reason)
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
            chunk, raws = self._encode_frames(frames, router)
            if feeds is not None:
                # Spooled first: a sink that is detached below finds these records there.
                await feeds.append(chunk, raws)
            self._route_chunk(chunk, router, out)
            if feeds is not None:
                await feeds.deliver(out)
                continue
            for name, items in out.items():
                if items:
                    await self._workers[name].batcher.put(items)

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
        emit = self._emit
        for gap in router.route_chunk(chunk, out):
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
