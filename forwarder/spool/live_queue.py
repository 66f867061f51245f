"""Queueing for a sink on the live path, and when a failing sink must leave it for the spool."""

from __future__ import annotations

import asyncio
from typing import Final

from forwarder.delivery.worker import SinkWorker
from forwarder.routing import Item

FAILING_CHECK_S: Final = 0.05  # how often a reader waiting on a full queue checks its sink


def failing(worker: SinkWorker) -> bool:
    """Whether the sink's last send failed (it has not delivered since)."""
    return worker.health.failing_since is not None


def backed_up(worker: SinkWorker, lag_records: int) -> bool:
    """A failing sink with ``lag_records`` (or a full queue) waiting: the rest waits spooled."""
    batcher = worker.batcher
    return (batcher.depth >= lag_records or batcher.queue.full()) and failing(worker)


async def put_live(worker: SinkWorker, items: list[Item]) -> bool:
    """Queue items for an attached sink; False if it fails while its queue is full.

    A healthy sink that is full makes the reader wait (backpressure); one that starts
    failing meanwhile is detached instead, or it would hold every other sink back.
    """
    batcher = worker.batcher
    if not batcher.queue.full():
        batcher.put_nowait(items)
        return True
    put = asyncio.ensure_future(batcher.put(items))
    try:
        while not put.done():
            await asyncio.wait({put}, timeout=FAILING_CHECK_S)
            if not put.done() and failing(worker):
                put.cancel()  # asyncio.Queue.put leaves nothing behind when cancelled
                await asyncio.wait({put})
                if put.cancelled():
                    return False
    finally:
        if not put.done():
            put.cancel()
    put.result()
    return True
