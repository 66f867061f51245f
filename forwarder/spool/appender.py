"""The reader's way into the spool: small chunks coalesced into one write, urgent ones at once.

Appending costs a few microseconds per call whatever its size (a block head, a CRC, one
``write``), so the small windows a live reader gets at high rates (a few records each) cost
more per record than the spool's target. Chunks are therefore gathered, up to
``COALESCE_BYTES``, and written as one block when that much has gathered, when the event
loop next runs anything else (the reader is waiting for input or a queue), or before anyone
reads the spool. A record at ``fsync_min_level`` or worse, ``when_full = "block"`` and a
degraded disk take the direct path: written (and synced) before the chunk is routed, and
the reader waits while the spool refuses (the backpressure that ends at the capture buffer).

What a SIGKILL costs: records gathered but not written are still in the kernel ring; they
are read again at the next start, or reported as an exact gap if the ring lost them.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable, Sequence
from typing import Final

from forwarder.spool.spool import Spool

COALESCE_BYTES: Final = 64 << 10  # about one full capture window
SPOOL_FULL_WAIT_S: Final = 0.1


class SpoolAppender:
    """Appends the reader's chunks to the spool, coalescing small ones."""

    def __init__(self, spool: Spool, on_refused: Callable[[], None]) -> None:
        self._spool = spool
        self._on_refused = on_refused  # while the spool refuses: free what can be freed
        self._urgent_level = int(spool.config.fsync_min_level)
        self._coalesce = spool.config.when_full == "drop_oldest"
        self._seqs: array[int] = array("Q")
        self._raws: list[bytes] = []
        self._bytes = 0
        self._flush_scheduled = False

    async def append(self, seqs: array[int], raws: list[bytes], prefixes: Sequence[int]) -> None:
        """Append one chunk's records (``seqs`` ascending, as read); see the module docstring."""
        urgent_level = self._urgent_level
        # A few distinct prefixes per chunk: the set is built in C, the loop is short.
        urgent = any(prefix & 7 <= urgent_level for prefix in set(prefixes))
        if self._coalesce and not urgent and self._spool.unwritable is None:
            self._seqs.extend(seqs)
            self._raws.extend(raws)
            self._bytes += sum(map(len, raws))
            if self._bytes >= COALESCE_BYTES:
                self.flush()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_soon)
            return
        self.flush()
        while self._raws:  # what was gathered goes first, in order
            await self._wait_for_room()
            self.flush()
        taken = self._spool.append(seqs, raws, urgent=urgent)
        while taken < len(raws):
            await self._wait_for_room()
            taken += self._spool.append(seqs[taken:], raws[taken:], urgent=urgent)

    async def _wait_for_room(self) -> None:
        """The spool refuses (block mode full, or disk and memory full): wait, free, retry."""
        await asyncio.sleep(SPOOL_FULL_WAIT_S)
        self._on_refused()
        self._spool.tick()

    def flush(self) -> None:
        """Write what was gathered (never waits; what the spool refuses stays gathered)."""
        if not self._raws:
            return
        taken = self._spool.append(self._seqs, self._raws)
        if taken == len(self._raws):
            self._seqs, self._raws, self._bytes = array("Q"), [], 0
        else:  # the disk and then memory refused: keep the rest, in order
            del self._seqs[:taken]
            del self._raws[:taken]
            self._bytes = sum(map(len, self._raws))

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self.flush()
