"""The ``file`` sink: append NDJSON to a file, fsynced before a batch is acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Literal

from forwarder.errors import RetryableSinkError
from forwarder.sinks.base import Batch, SendResult, Sink, SinkConfigBase, SinkContext


class FileSinkConfig(SinkConfigBase):
    """``type = "file"``: ``path`` of the NDJSON file (created, appended to)."""

    type: Literal["file"]
    path: Path
    fsync: bool = True

    def build(self, name: str, context: SinkContext) -> Sink:  # noqa: ARG002 - interface
        """Create the file sink."""
        return FileSink(name, self.path, fsync=self.fsync)


class FileSink(Sink):
    """Appends each event as one JSON line; durable (fsync) before acknowledging."""

    def __init__(self, name: str, path: Path, *, fsync: bool = True) -> None:
        super().__init__(name)
        self._path = path
        self._fsync = fsync
        self._fd: int | None = None

    async def start(self) -> None:
        """Open the file for appending, creating it and its directory."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise RetryableSinkError(f"cannot open {self._path}: {error.strerror}") from error

    async def send(self, batch: Batch) -> SendResult:
        """Append the batch and fsync it."""
        if self._fd is None:
            await self.start()
        payload = b"".join(event.json + b"\n" for event in batch.events)
        try:
            await asyncio.to_thread(self._write, payload)
        except OSError as error:
            raise RetryableSinkError(f"cannot write {self._path}: {error.strerror}") from error
        return SendResult()

    async def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, payload: bytes) -> None:
        assert self._fd is not None
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
