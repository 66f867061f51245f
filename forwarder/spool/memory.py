"""Degraded mode: records the disk refused (ENOSPC, EIO, ...) wait in memory, bounded.

The spool keeps them in order (readers see them) up to ``memory_bytes`` and offers them to
the disk again with a capped backoff (1 s doubling to 30 s); beyond the bound it takes no
more, so the capture buffer and then the kernel ring hold the rest. It never exits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from forwarder.spool.format import FRAME_HEAD_SIZE

log = structlog.get_logger("forwarder.spool")
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0


class MemoryHold:
    """Records held in memory while the disk refuses writes, and when to try it again."""

    def __init__(self, memory_bytes: int, monotonic: Callable[[], float]) -> None:
        self._memory_bytes = memory_bytes
        self._monotonic = monotonic
        self.records: list[tuple[int, bytes]] = []
        self.bytes = 0
        self.unwritable: str | None = None  # why the disk refuses writes, while it does
        self._retry_at = 0.0
        self._retry_s = RETRY_FIRST_S

    @property
    def degraded(self) -> bool:
        """True while the disk refuses writes or records still wait in memory."""
        return self.unwritable is not None or bool(self.records)

    def failed(self, error: OSError) -> None:
        """The disk refused a write: hold from now on, retry after a backoff."""
        first = self.unwritable is None
        self.unwritable = f"{error.strerror or error}"
        self._retry_at = self._monotonic() + self._retry_s
        self._retry_s = min(RETRY_MAX_S, self._retry_s * 2)
        if first:
            log.error(
                "spool_unwritable",
                error=self.unwritable,
                hint="records are held in memory, then in the kernel ring, until the disk "
                "takes writes again; free space or fix the device",
            )

    def hold(self, seqs: Sequence[int], raws: Sequence[bytes]) -> int:
        """Keep records in memory; how many leading ones fit ``memory_bytes``."""
        taken = 0
        for seq, raw in zip(seqs, raws, strict=True):
            size = FRAME_HEAD_SIZE + len(raw)
            if self.bytes + size > self._memory_bytes:
                break
            self.records.append((seq, raw))
            self.bytes += size
            taken += 1
        return taken

    def take_if_due(self) -> list[tuple[int, bytes]] | None:
        """Everything held, to write again, once the backoff has passed; else None."""
        if self._monotonic() < self._retry_at:
            return None
        records, self.records, self.bytes = self.records, [], 0
        self.unwritable = None
        return records

    def recovered(self) -> None:
        """The disk took the held records: the next failure starts the backoff afresh."""
        self._retry_s = RETRY_FIRST_S
        log.info("spool_writable_again")

    def after(self, seq: int) -> list[tuple[int, bytes]]:
        """Records held above ``seq``."""
        return [item for item in self.records if item[0] > seq]
