"""A fake sink for tests: records every batch it is sent and answers from a script.

``FakeSink(answers=[Outcome.unavailable("503"), ...])`` answers each send with the next
scripted Outcome (an Exception in the script is raised instead: "no answer"); once the
script is used up it stores the batch and answers ``Outcome.delivered()``. Closing
``gate`` (``fake.gate.clear()``) holds every send until it opens again: a sink that
does not answer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from forwarder.sinks.base import Batch, Sink
from forwarder.sinks.outcome import Outcome


class FakeSink(Sink):
    """Records batches, answers scripted Outcomes, and says whether it was started and closed."""

    def __init__(self, name: str = "fake", answers: Iterable[Outcome | Exception] = ()) -> None:
        super().__init__(name)
        self.answers: deque[Outcome | Exception] = deque(answers)
        self.gate = asyncio.Event()
        self.gate.set()
        self.sent: list[Batch] = []  # every attempt, answered or not
        self.stored: list[Batch] = []  # the batches answered "delivered"
        self.started = False
        self.closed = False

    async def start(self) -> None:
        """Remember that the worker started us."""
        self.started = True

    async def send(self, batch: Batch) -> Outcome:
        """Record the attempt; wait for the gate; answer the next scripted Outcome, else store."""
        self.sent.append(batch)
        await self.gate.wait()
        if self.answers:
            answer = self.answers.popleft()
            if isinstance(answer, Exception):
                raise answer
            return answer
        self.stored.append(batch)
        return Outcome.delivered()

    async def close(self) -> None:
        """Remember that the worker closed us."""
        self.closed = True

    def stored_seqs(self) -> list[int]:
        """The kernel seq of every stored event, in the order stored."""
        return [event.checkpoint_seq for batch in self.stored for event in batch.events]
