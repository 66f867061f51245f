"""The task that feeds one lagging sink from the spool until it can take the live path again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Final

import structlog

from forwarder.delivery.batcher import Batcher
from forwarder.routing import Item
from forwarder.spool.catch_up import SinkCatchUp
from forwarder.spool.fanout import SharedRouter
from forwarder.spool.spool import Spool

log = structlog.get_logger("forwarder.spool")
CATCH_UP_RECORDS: Final = 2048
CATCH_UP_IDLE_S: Final = 0.05


class CatchUpLoop:
    """Feeds ``catch_up``'s sink from the spool, then attaches it to the live router.

    ``backed_up``: the sink is down with batches waiting (read no further); ``flush``
    writes what the live path appended, so the cursor sees every record routed live;
    ``attached`` is told the sink's position once it takes the live path again.
    """

    def __init__(
        self,
        catch_up: SinkCatchUp,
        batcher: Batcher,
        router: SharedRouter,
        spool: Spool,
        *,
        flush: Callable[[], None],
        backed_up: Callable[[], bool],
        select: Callable[[Sequence[Item]], Sequence[Item]],
        count_gaps: Callable[[str, SinkCatchUp], None],
        reading_done: Callable[[], bool],
        attached: Callable[[str, tuple[str, int]], None],
    ) -> None:
        self._catch_up = catch_up
        self._batcher = batcher
        self._router = router
        self._spool = spool
        self._flush = flush
        self._backed_up = backed_up
        self._select = select
        self._count_gaps = count_gaps
        self._reading_done = reading_done
        self._attached = attached

    async def run(self) -> None:
        """Feed the sink until it has caught up (or the drain ends its stream); log a failure."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("catch_up_failed", sink=self._catch_up.sink)
            raise

    async def _run(self) -> None:
        catch_up, batcher, router = self._catch_up, self._batcher, self._router
        name = catch_up.sink
        while True:
            if self._backed_up():
                await asyncio.sleep(CATCH_UP_IDLE_S)  # the sink is down: read no further
                continue
            self._flush()  # the cursor must see every record the live path has routed
            items = catch_up.next_items(CATCH_UP_RECORDS)
            self._count_gaps(name, catch_up)
            if items:
                await batcher.put(self._select(items))  # the kinds the sink takes
                continue
            if items is not None:
                continue  # entries that meant nothing to send (set aside, filtered)
            if self._reading_done():  # the drain: what the live path held for it goes first
                pending = catch_up.finish(router.identity)
                self._count_gaps(name, catch_up)
                if pending:
                    await batcher.put(self._select(pending))
                await batcher.close()
                return
            if batcher.queue.qsize() < batcher.queue.maxsize // 2:
                boot_id, _ = catch_up.position
                if boot_id == router.identity.boot_id or self._boot_done(boot_id):
                    # From the check to the attach nothing awaits: no record can slip between.
                    pending = catch_up.finish(router.identity)
                    self._count_gaps(name, catch_up)
                    if pending:  # the queue has room (checked above): no await, no interleaving
                        batcher.put_nowait(self._select(pending))
                    _, seq = catch_up.position
                    router.attach(name, seq)
                    self._attached(name, (router.identity.boot_id, seq))
                    log.info("sink_caught_up", sink=name, seq=seq)
                    return
            await asyncio.sleep(CATCH_UP_IDLE_S)

    def _boot_done(self, boot_id: str) -> bool:
        """True when the spool holds nothing more of ``boot_id`` (an older boot)."""
        return self._spool.boot(boot_id) is not self._spool.current
