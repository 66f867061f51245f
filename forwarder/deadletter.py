"""Dead-letter files: events a sink refused for good, kept for a person to inspect.

``<state_dir>/deadletter/<sink>.ndjson``, one JSON object per event:
``{"sink", "reason", "detail", "at", "event": {...the event...}}``, fsynced before the
checkpoint moves past the event, so nothing refused is ever silently gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from forwarder.encode import Event, format_timestamp
from forwarder.errors import StateError


class DeadLetterFile:
    """Appends refused events of one sink."""

    def __init__(self, state_dir: Path, sink: str) -> None:
        self.path = state_dir / "deadletter" / f"{sink}.ndjson"
        self._sink = sink

    def write(self, events: Sequence[tuple[Event, str, str]]) -> None:
        """Append (event, reason, detail) entries durably."""
        at = format_timestamp(time.time_ns())
        lines = b"".join(
            orjson.dumps(
                {"sink": self._sink, "reason": reason, "detail": detail, "at": at,
                 "event": orjson.Fragment(event.json)}
            ) + b"\n"
            for event, reason, detail in events
        )  # fmt: skip
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(lines)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            # Refused events may not vanish: without this file the forwarder must stop.
            raise StateError(
                f"cannot write dead-letter file {self.path}: {error.strerror}"
            ) from error
