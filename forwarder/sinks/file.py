"""The ``file`` sink: append NDJSON to a file, fsynced before a batch is acknowledged.

One batch is written at a time (``max_in_flight = 1``): a failed write truncates the file
back to where it began, which must never cut off a batch written (and acknowledged) after
that point by an overlapping write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import ClassVar

from forwarder.sinks.base import Batch, Sink, SinkConfigBase, SinkContext
from forwarder.sinks.outcome import Outcome, describe


class FileSinkConfig(SinkConfigBase, tag="file", frozen=True, kw_only=True):
    """``type = "file"``: ``path`` of the NDJSON file (created, appended to)."""

    path: Path
    fsync: bool = True

    def build(self, name: str, context: SinkContext) -> Sink:  # noqa: ARG002 - interface
        """Create the file sink."""
        return FileSink(name, self.path, fsync=self.fsync)


class FileSink(Sink):
    """Appends each event as one JSON line; durable (fsync) before acknowledging."""

    max_in_flight: ClassVar[int | None] = 1
    reads_lines_only: ClassVar[bool] = True

    def __init__(self, name: str, path: Path, *, fsync: bool = True) -> None:
        super().__init__(name)
        self._path = path
        self._fsync = fsync
        self._fd: int | None = None

    async def start(self) -> None:
        """Open the file for appending, creating it and its directory."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def send(self, batch: Batch) -> Outcome:
        """Append the batch and fsync it."""
        payload = batch.ndjson()
        await asyncio.to_thread(self._write, payload)
        return Outcome.delivered()

    def classify(self, error: Exception) -> Outcome:
        """A failed open or write (a full disk, a read-only mount) is retried."""
        if isinstance(error, OSError):
            return Outcome.unavailable(f"file {self._path}: {error.strerror or describe(error)}")
        return Outcome.unavailable(describe(error))

    async def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, payload: bytes) -> None:
        if self._fd is None:
            raise RuntimeError(f"file sink {self.name} was not started")
        start = os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(payload)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self._fsync:
                os.fsync(self._fd)
        except OSError:
            # Leave no torn line behind: the retry writes the whole batch again.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise
