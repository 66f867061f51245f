"""Per-sink checkpoints: the last kernel seq a sink confirmed, per boot.

One small JSON file per sink, ``<state_dir>/checkpoints/<sink>.json``::

    {"boot_id": "...", "seq": 1234, "clock_offset_ns": 1764182530123456789,
     "updated_at": "2026-11-26T19:42:10.123456Z"}

Written atomically (temp file in the same directory, write, fsync, rename, fsync the
directory), so a crash leaves the old or the new checkpoint, never a torn one. A file
that exists but cannot be read as a checkpoint is an error, never "no checkpoint".
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import orjson

from forwarder.encoding.reference import format_timestamp
from forwarder.errors import CheckpointCorruptError, StateError


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where one sink stands: everything of ``boot_id`` up to ``seq`` is delivered.

    ``seq`` is -1 when nothing of the boot is delivered yet.
    """

    boot_id: str
    seq: int
    clock_offset_ns: int
    updated_at: str = ""


class CheckpointStore:
    """Reads and atomically writes the checkpoint files of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "checkpoints"

    def prepare(self) -> None:
        """Create the directory and prove it is writable (raises StateError)."""
        probe = self.directory / ".write-test"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StateError(
                f"state directory {self.directory} is not writable: {error.strerror}"
            ) from error

    def path(self, sink: str) -> Path:
        """The checkpoint file of ``sink``."""
        return self.directory / f"{sink}.json"

    def load(self, sink: str) -> Checkpoint | None:
        """The sink's checkpoint, None if it has none; raise if the file is unusable."""
        path = self.path(sink)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StateError(f"cannot read checkpoint {path}: {error.strerror}") from error
        try:
            data = orjson.loads(raw)
            checkpoint = Checkpoint(
                boot_id=data["boot_id"],
                seq=data["seq"],
                clock_offset_ns=data["clock_offset_ns"],
                updated_at=data.get("updated_at", ""),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointCorruptError(
                f"checkpoint {path} is corrupt ({error}); move it away to start over"
            ) from error
        if not (
            isinstance(checkpoint.boot_id, str)
            and type(checkpoint.seq) is int  # not bool, which isinstance() would accept
            and type(checkpoint.clock_offset_ns) is int
            and checkpoint.seq >= -1
        ):
            raise CheckpointCorruptError(
                f"checkpoint {path} is corrupt (wrong field types); move it away to start over"
            )
        return checkpoint

    def save(self, sink: str, boot_id: str, seq: int, clock_offset_ns: int) -> Checkpoint:
        """Durably replace the sink's checkpoint."""
        checkpoint = Checkpoint(boot_id, seq, clock_offset_ns, format_timestamp(time.time_ns()))
        path = self.path(sink)
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, orjson.dumps(asdict(checkpoint)))
                os.fsync(fd)
            finally:
                os.close(fd)
            temporary.replace(path)
            directory_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)
        except OSError as error:
            with contextlib.suppress(OSError):  # a torn temp file must not stay behind
                temporary.unlink(missing_ok=True)
            raise StateError(f"cannot write checkpoint {path}: {error.strerror}") from error
        return checkpoint


CHECKPOINT_INTERVAL_S: Final = 0.02  # at most ~50 checkpoint writes per second and sink


class CheckpointWriter:
    """Writes one sink's checkpoint in a thread: always the latest position handed to it.

    The delivery worker hands positions over in order, once each batch and every earlier
    one are confirmed. While a write is under way, and until ``min_interval_s`` after the
    last one began, newer positions wait and only the latest is written next: a slow disk
    or a fast stream of small batches costs fewer writes, never order, and never holds a
    send (each write is two fsyncs). :meth:`flush` writes the last position at once. A
    failed write is raised by :meth:`check` and :meth:`flush` (the sink stops).
    """

    def __init__(
        self,
        store: CheckpointStore,
        sink: str,
        clock_offset_ns: int,
        on_saved: Callable[[int], None],
        *,
        min_interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self._store = store
        self._min_interval_s = min_interval_s
        self._flushing = False
        self._sink = sink
        self._clock_offset_ns = clock_offset_ns
        self._on_saved = on_saved
        self._pending: tuple[str, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # set by flush(): no more waiting between writes
        self._last_began = -math.inf  # loop time the last write began

    def advance(self, boot_id: str, seq: int) -> None:
        """The sink confirmed everything up to ``seq`` of ``boot_id``: write it soon."""
        self.check()
        self._pending = (boot_id, seq)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write())

    def check(self) -> None:
        """Raise the error of a failed write, if any."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def flush(self) -> None:
        """Write the latest position now and wait for it (raise if a write failed)."""
        self._flushing = True
        self._wake.set()
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})
        self.check()

    def cancel(self) -> None:
        """Stop writing (shutdown timeout); a write under way still completes in its thread."""
        if self._task is not None:
            self._task.cancel()

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending is not None:
            # Spaced from the last write's start, also when this one is the first in a
            # while: batches confirmed one by one, each after the last write ended, would
            # otherwise cost a write (two fsyncs) each.
            wait_s = self._last_began + self._min_interval_s - loop.time()
            if wait_s > 0 and not self._flushing:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)
            (boot_id, seq), self._pending = self._pending, None
            self._last_began = loop.time()
            await asyncio.to_thread(
                self._store.save, self._sink, boot_id, seq, self._clock_offset_ns
            )
            self._on_saved(seq)
