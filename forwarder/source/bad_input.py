"""Input the forwarder cannot use, set aside so that no single record ever stops it.

Two kinds, both counted and logged (never silently dropped):

- dump records the capture process rejected (a raw NUL, longer than any kernel record;
  ``capture_process.DumpFramer``): counted by reason; the warning is aggregated, one line at
  most every ``REJECT_LOG_INTERVAL_S`` with the counts since the last one;
- records whose handling (parse, encode, route) raised something unexpected: the raw bytes go
  to the source dead-letter file with the error, ``records_failed_total`` counts them, one
  log line per record.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Final

from forwarder.delivery.dead_letters import SourceDeadLetterFile
from forwarder.telemetry.events import Emitter

REJECT_LOG_INTERVAL_S: Final = 10.0


class BadInput:
    """Counts, logs and dead-letters the records the pipeline cannot ship."""

    def __init__(
        self,
        emit: Emitter,
        dead_letters: SourceDeadLetterFile,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._dead_letters = dead_letters
        self._clock = clock
        self._unlogged: Counter[str] = Counter()
        self._logged_at: float | None = None

    def rejected(self, reason: bytes) -> None:
        """Count one record the capture process rejected; log if the interval has passed."""
        name = reason.decode("ascii", "replace")
        self._emit.record_rejected(name)
        self._unlogged[name] += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= REJECT_LOG_INTERVAL_S:
            self._logged_at = now
            self.flush_log()

    def flush_log(self) -> None:
        """Log the rejections counted since the last warning, if any."""
        if self._unlogged:
            self._emit.records_rejected(self._unlogged)
            self._unlogged.clear()

    def failed(self, raw: bytes, error: Exception, seq: int | None) -> None:
        """Dead-letter one record whose handling raised ``error``, count and log it."""
        detail = f"{type(error).__name__}: {error}"
        self._dead_letters.write(raw, "record_failed", detail, seq)
        self._emit.record_failed(seq, detail, str(self._dead_letters.path))
