"""Dead-letter files: what could not be delivered, kept for a person to inspect.

``<state_dir>/deadletter/<sink>.ndjson``: events a sink refused for good, one JSON object per
event, ``{"sink", "reason", "detail", "at", "event": {...the event...}}``.
``<state_dir>/deadletter/@source.ndjson`` (``@`` is never in a sink name): raw records whose
handling failed before any sink saw them, ``{"reason", "detail", "at", "seq", "raw",
"raw_base64"}`` (``raw`` readable, ``raw_base64`` the exact bytes).
Both are fsynced before the checkpoint moves past the entry, so nothing is ever silently gone.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from forwarder.encoding.reference import Event, format_timestamp
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
        _append_durably(self.path, lines)


class SourceDeadLetterFile:
    """Appends raw records whose handling failed (the source's own dead letters)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "deadletter" / "@source.ndjson"

    def write(self, raw: bytes, reason: str, detail: str, seq: int | None) -> None:
        """Append one raw record durably, with why it failed and its seq if known."""
        entry = {
            "reason": reason,
            "detail": detail,
            "at": format_timestamp(time.time_ns()),
            "seq": seq,
            "raw": raw.decode("utf-8", "backslashreplace"),
            "raw_base64": base64.b64encode(raw).decode("ascii"),
        }
        _append_durably(self.path, orjson.dumps(entry) + b"\n")


def _append_durably(path: Path, lines: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(lines)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        # What is dead-lettered may not vanish: without this file the forwarder must stop.
        raise StateError(f"cannot write dead-letter file {path}: {error.strerror}") from error
