"""Group one sink's items into batches by count, size and linger time.

Items arrive in groups (one per window of records the reader handled) through a bounded
queue: the bound is the backpressure that ends at the capture buffer. Most items are
slices of a chunk; a batch takes whole slices, or cuts one at the record where the count
or the size is reached (a bisect over the chunk's line offsets), never touching records
one by one. A batch closes when it holds ``max_records`` records or ``max_bytes`` of
NDJSON, or ``linger_ms`` after its first item, or at once when the stream ends.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from forwarder.encoding.chunk import Slice
from forwarder.encoding.reference import Event
from forwarder.options import BatchConfig
from forwarder.routing import Item, Position
from forwarder.sinks.base import Batch, Part

END: Final = None
QUEUE_CHUNKS: Final = 16


@dataclass(slots=True)
class PendingBatch:
    """Parts to send, and the checkpoint position reached once they are delivered."""

    parts: list[Part] = field(default_factory=list)
    count: int = 0  # records in parts
    nbytes: int = 0  # of NDJSON in parts
    boot_id: str = ""
    checkpoint_seq: int = -1
    filtered: int = 0

    @property
    def events(self) -> list[Event]:
        """Every record as an Event (slow: for tests and debugging)."""
        return list(self.batch().events)

    def batch(self) -> Batch:
        """What a sink is sent."""
        return Batch(self.parts)

    def add(self, part: Part) -> None:
        """Append a part, joining a slice to the one before it when they touch."""
        parts = self.parts
        last = parts[-1] if parts else None
        if (
            isinstance(part, Slice)
            and isinstance(last, Slice)
            and last.chunk is part.chunk
            and last.stop == part.start
        ):
            parts[-1] = Slice(part.chunk, last.start, part.stop)
        else:
            parts.append(part)
        self.count += 1 if isinstance(part, Event) else len(part)


class Batcher:
    """Turns the items of one sink's queue into batches."""

    def __init__(self, config: BatchConfig) -> None:
        self._config = config
        self.queue: asyncio.Queue[Sequence[Item] | None] = asyncio.Queue(QUEUE_CHUNKS)
        self._carry: deque[Item] = deque()
        self._carried = 0  # records in _carry
        self._ended = False
        self._queued_items = 0
        self._getter: asyncio.Future[Sequence[Item] | None] | None = None

    @property
    def depth(self) -> int:
        """Records waiting for this sink: queued plus the ones being batched."""
        return self._queued_items + self._carried

    async def put(self, items: Sequence[Item]) -> None:
        """Queue a group of items; waits while the sink is behind (backpressure)."""
        await self.queue.put(items)
        self._queued_items += _records(items)

    def put_nowait(self, items: Sequence[Item]) -> None:
        """Queue a group of items now (raises asyncio.QueueFull when the queue is full)."""
        self.queue.put_nowait(items)
        self._queued_items += _records(items)

    async def close(self) -> None:
        """Mark the end of the stream: the last batch is sent without lingering."""
        await self.queue.put(END)

    async def next_batch(self) -> PendingBatch | None:
        """The next batch, or None once the stream ended and everything was batched."""
        batch = PendingBatch()
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        max_records = self._config.max_records
        while True:
            if self._fill(batch):
                return batch
            has_items = bool(batch.count or batch.filtered)
            if self._ended:
                return batch if has_items else None
            if batch.count >= max_records:
                return batch
            if has_items and deadline is None:
                deadline = loop.time() + self._config.linger_ms / 1000
            if self._getter is None:
                self._getter = asyncio.ensure_future(self.queue.get())
            # asyncio.wait never cancels the getter, so no item is lost at a timeout.
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait({self._getter}, timeout=timeout)
            if not done:
                return batch
            items, self._getter = self._getter.result(), None
            if items is END:
                self._ended = True
            else:
                records = _records(items)
                self._queued_items -= records
                self._carried += records
                self._carry.extend(items)

    def _fill(self, batch: PendingBatch) -> bool:
        """Move carried items into ``batch``; True once it is full."""
        max_records, max_bytes = self._config.max_records, self._config.max_bytes
        carry = self._carry
        while carry:
            item = carry[0]
            if isinstance(item, Position):
                batch.filtered += 1
                self._carried -= 1
            elif isinstance(item, Event):
                item_bytes = len(item.json) + 1
                # An event at the position of the item before it (a kernel event right after
                # the record that completed it) stays in that item's batch: the checkpoint
                # must not reach the position before the event is delivered.
                if (
                    batch.count
                    and (batch.count >= max_records or batch.nbytes + item_bytes > max_bytes)
                    and item.checkpoint_seq != batch.checkpoint_seq
                ):
                    return True
                batch.nbytes += item_bytes
                self._carried -= 1
                batch.add(item)
            else:
                room = max_records - batch.count
                take = _fitting(item, room, max_bytes - batch.nbytes, first=not batch.count)
                if take < len(item):
                    if take:
                        head = item.part(0, take)
                        carry[0] = item.part(take, len(item))
                        self._carried -= take
                        batch.nbytes += head.nbytes
                        batch.add(head)
                        batch.boot_id, batch.checkpoint_seq = head.boot_id, head.checkpoint_seq
                    return True
                batch.nbytes += item.nbytes
                self._carried -= take
                batch.add(item)
            carry.popleft()
            batch.boot_id, batch.checkpoint_seq = item.boot_id, item.checkpoint_seq
        return False


def _fitting(part: Slice, room: int, budget: int, *, first: bool) -> int:
    """How many records from the start of ``part`` fit in ``room`` records and ``budget`` bytes.

    The first record of a batch always fits (a record larger than ``max_bytes`` goes alone).
    The kernel events a merged chunk holds right after a record (rows at its seq) stay in
    its batch, as a standalone event at the batch's position does: the checkpoint must not
    reach the position before they are delivered.
    """
    chunk = part.chunk
    limit = part.start + max(0, min(room, len(part)))
    fit = bisect_right(chunk.ends, chunk.start(part.start) + budget, part.start, limit)
    if first and fit == part.start:
        fit += 1
    if chunk.events is not None and part.start < fit < part.stop:
        seqs = chunk.seqs
        while fit < part.stop and seqs[fit] == seqs[fit - 1]:
            fit += 1
    return fit - part.start


def _records(items: Sequence[Item]) -> int:
    return sum(len(item) if isinstance(item, Slice) else 1 for item in items)
