"""Group one sink's items into batches by count, size and linger time.

Items arrive in chunks (one chunk per group of records the reader handled) through a
bounded queue: the bound is the backpressure that ends at the capture buffer. A batch
closes when it holds ``max_records`` events or ``max_bytes`` of JSON, or ``linger_ms``
after its first item, or at once when the stream ends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from forwarder.encoding.reference import Event
from forwarder.options import BatchConfig
from forwarder.routing import Item

END: Final = None
QUEUE_CHUNKS: Final = 64


@dataclass(slots=True)
class PendingBatch:
    """Events to send, and the checkpoint position reached once they are delivered."""

    events: list[Event] = field(default_factory=list)
    boot_id: str = ""
    checkpoint_seq: int = -1
    filtered: int = 0


class Batcher:
    """Turns the chunks of one sink's queue into batches."""

    def __init__(self, config: BatchConfig) -> None:
        self._config = config
        self.queue: asyncio.Queue[Sequence[Item] | None] = asyncio.Queue(QUEUE_CHUNKS)
        self._carry: deque[Item] = deque()
        self._ended = False
        self._queued_items = 0
        self._getter: asyncio.Future[Sequence[Item] | None] | None = None

    @property
    def depth(self) -> int:
        """Items waiting for this sink: queued chunks plus the ones being batched."""
        return self._queued_items + len(self._carry)

    async def put(self, chunk: Sequence[Item]) -> None:
        """Queue a chunk of items; waits while the sink is behind (backpressure)."""
        await self.queue.put(chunk)
        self._queued_items += len(chunk)

    async def close(self) -> None:
        """Mark the end of the stream: the last batch is sent without lingering."""
        await self.queue.put(END)

    async def next_batch(self) -> PendingBatch | None:
        """The next batch, or None once the stream ended and everything was batched."""
        batch = PendingBatch()
        size = 0
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            while self._carry:
                item = self._carry[0]
                if isinstance(item, Event):
                    # An event at the position of the item before it (a kernel event right
                    # after the record that completed it) stays in that item's batch: the
                    # checkpoint must not reach the position before the event is delivered.
                    if (
                        batch.events
                        and (
                            len(batch.events) >= self._config.max_records
                            or size + len(item.json) > self._config.max_bytes
                        )
                        and item.checkpoint_seq != batch.checkpoint_seq
                    ):
                        return batch
                    batch.events.append(item)
                    size += len(item.json)
                else:
                    batch.filtered += 1
                self._carry.popleft()
                batch.boot_id, batch.checkpoint_seq = item.boot_id, item.checkpoint_seq
            has_items = bool(batch.events or batch.filtered)
            if self._ended:
                return batch if has_items else None
            if len(batch.events) >= self._config.max_records:
                return batch
            if has_items and deadline is None:
                deadline = loop.time() + self._config.linger_ms / 1000
            if self._getter is None:
                self._getter = asyncio.ensure_future(self.queue.get())
            # asyncio.wait never cancels the getter, so no chunk is lost at a timeout.
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait({self._getter}, timeout=timeout)
            if not done:
                return batch
            chunk, self._getter = self._getter.result(), None
            if chunk is END:
                self._ended = True
            else:
                self._queued_items -= len(chunk)
                self._carry.extend(chunk)
