"""The ``stdout`` sink: NDJSON on standard output, the default when no sink is configured.

A batch counts as delivered once it is written and flushed; the forwarder's own logs go
to stderr, so stdout carries nothing but events.
"""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO, ClassVar

from forwarder.errors import OutputClosedError
from forwarder.sinks.base import Batch, Sink, SinkConfigBase, SinkContext
from forwarder.sinks.outcome import Outcome


class StdoutSinkConfig(SinkConfigBase, tag="stdout", frozen=True, kw_only=True):
    """``type = "stdout"``: no options of its own."""

    def build(self, name: str, context: SinkContext) -> Sink:  # noqa: ARG002 - interface
        """Create the stdout sink."""
        return StdoutSink(name, sys.stdout.buffer)


class StdoutSink(Sink):
    """Writes each event as one JSON line to a binary stream, one batch at a time."""

    max_in_flight: ClassVar[int | None] = 1
    reads_lines_only: ClassVar[bool] = True

    def __init__(self, name: str, stream: BinaryIO) -> None:
        super().__init__(name)
        self._stream = stream

    async def send(self, batch: Batch) -> Outcome:
        """Write and flush the batch; a closed pipe stops the forwarder (nothing to retry)."""
        payload = batch.ndjson()
        try:
            await asyncio.to_thread(self._write, payload)
        except BrokenPipeError as error:
            raise OutputClosedError("stdout was closed by its reader") from error
        return Outcome.delivered()

    def _write(self, payload: bytes) -> None:
        self._stream.write(payload)
        self._stream.flush()
