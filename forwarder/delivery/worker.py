"""Deliver one sink's batches: act on each Outcome, and move the checkpoint in order.

The pipeline runs one :class:`SinkWorker` per sink. It alone starts and closes the sink,
and it is the one place that reads an :class:`~forwarder.sinks.outcome.Outcome`: items to
retry go back through :class:`RetryPolicy` (by index, nothing mutated in place), a batch
too large is split, rejections are dead-lettered, duplicates counted, and the sink's
health (``sink_up``, /readyz) follows what the receiver said. A partial answer that
stored something keeps the sink up while the rest is retried.

Up to ``max_in_flight`` batches are sent at once (the smaller of ``[batch]`` and what the
sink allows), but the checkpoint only moves when the OLDEST batch in flight is done, so it
never passes an event that is not confirmed (or dead-lettered). This module (through its
:class:`~forwarder.delivery.checkpoint.CheckpointWriter`) is the only writer of checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

from forwarder.delivery.batcher import Batcher, PendingBatch
from forwarder.delivery.checkpoint import CheckpointStore, CheckpointWriter
from forwarder.delivery.dead_letters import DeadLetterFile
from forwarder.delivery.retry import RetryPolicy
from forwarder.errors import ForwarderError
from forwarder.options import BatchConfig
from forwarder.sinks.base import Batch, Sink, outcome_of
from forwarder.sinks.outcome import Outcome, Verdict
from forwarder.telemetry.events import Emitter


@dataclass(slots=True)
class SinkHealth:
    """What /readyz says about one sink."""

    failing_since: float | None = None
    last_error: str | None = None
    config_problem: bool = False
    checkpoint_seq: int | None = None


class SinkWorker:
    """Sends one sink's batches and keeps its checkpoint.

    ``max_in_flight`` is its window: ``[batch] max_in_flight``, at most the sink's own bound.
    """

    def __init__(
        self,
        sink: Sink,
        batch_config: BatchConfig,
        *,
        store: CheckpointStore,
        retry: RetryPolicy,
        dead_letters: DeadLetterFile,
        emit: Emitter,
        clock_offset_ns: int,
    ) -> None:
        self.sink = sink
        self.batcher = Batcher(batch_config)
        self.health = SinkHealth()
        bound = sink.max_in_flight
        self.max_in_flight = min(batch_config.max_in_flight, bound or batch_config.max_in_flight)
        self._retry = retry
        self._dead_letters = dead_letters
        self._emit = emit
        self._recovered = asyncio.Event()
        self._checkpoints = CheckpointWriter(store, sink.name, clock_offset_ns, self._saved)

    async def run(self) -> None:
        """Start the sink, then deliver batches until the stream ends; close it in the end."""
        slots = asyncio.Semaphore(self.max_in_flight)
        last_commit: asyncio.Task[None] | None = None
        try:
            await self._start()
            while (batch := await self.batcher.next_batch()) is not None:
                await slots.acquire()
                if last_commit is not None and last_commit.done():
                    last_commit.result()
                self._checkpoints.check()  # a failed checkpoint write stops this sink
                send = asyncio.create_task(self._deliver(batch.batch()))
                last_commit = asyncio.create_task(self._commit(batch, send, last_commit, slots))
                del batch, send  # the tasks hold them: an idle sink keeps no batch
            if last_commit is not None:
                await last_commit
            await self._checkpoints.flush()
        finally:
            self._checkpoints.cancel()
            if last_commit is not None and not last_commit.done():
                # Cancelling the newest commit cancels the chain of earlier commits it awaits,
                # and each cancels its send: nothing keeps sending to a closed sink.
                last_commit.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await last_commit
            await self.sink.close()

    def save_start(self, boot_id: str, seq: int) -> None:
        """Record where a sink that has delivered nothing yet begins (``seq``: the one before).

        A restart before its first delivery resumes there rather than at ``start_at`` again.
        """
        self._checkpoints.advance(boot_id, seq)

    async def _commit(
        self,
        batch: PendingBatch,
        send: asyncio.Task[None],
        previous: asyncio.Task[None] | None,
        slots: asyncio.Semaphore,
    ) -> None:
        """Move the checkpoint once this batch AND every earlier one are done.

        The slot is free then: the next batch is sent while the checkpoint is written
        (by the one writer, in order, the latest position each time).
        """
        try:
            try:
                await send
                if previous is not None:
                    await previous
            finally:
                slots.release()
        except asyncio.CancelledError:
            send.cancel()
            raise
        self._checkpoints.advance(batch.boot_id, batch.checkpoint_seq)
        if batch.filtered:
            self._emit.records_filtered(self.sink.name, batch.filtered)

    async def _start(self) -> None:
        """Start the sink through the retry policy; give up only with the retry budget."""

        async def started() -> Outcome:
            await self.sink.start()
            return Outcome.delivered()

        async def attempt() -> Outcome:
            outcome = await outcome_of(self.sink, started())
            self._note_health(outcome, items=1)
            return outcome

        outcome = await self._retry.call(attempt, self._on_retry, wake=self._recovered)
        if outcome.wants_retry:
            raise ForwarderError(f"sink {self.sink.name} did not start: {_problem(outcome, 1)}")

    async def _deliver(self, batch: Batch) -> None:
        """Deliver a batch, splitting on 'too large'; return when all is stored or dead."""
        parts = deque([batch]) if len(batch) else deque()
        while parts:
            part = parts.popleft()
            started = time.monotonic()
            unsent, outcome = await self._send_with_retry(part)
            if not unsent:
                self._emit.batch_delivered(self.sink.name, time.monotonic() - started)
            elif outcome.verdict is not Verdict.SPLIT:  # the retry budget is spent
                self._dead_letter(unsent, "retry_budget_exhausted", _problem(outcome, len(unsent)))
            elif len(unsent) == 1:
                self._dead_letter(unsent, outcome.split_reason, outcome.detail)
            else:
                self._emit.batch_split(self.sink.name)
                half = len(unsent) // 2
                parts.extendleft(
                    (unsent.select(range(half, len(unsent))), unsent.select(range(half)))
                )

    async def _send_with_retry(self, part: Batch) -> tuple[Batch, Outcome]:
        """Send until nothing is left to retry; return the events still unsent and the last Outcome.

        What is unsent after the retries is either too large (to split) or what the spent
        retry budget leaves (to dead-letter); the rest is already settled.
        """
        unsent = part

        async def attempt() -> Outcome:
            nonlocal unsent
            outcome = await outcome_of(self.sink, self.sink.send(unsent))
            self._note_health(outcome, items=len(unsent))
            unsent = self._settle(unsent, outcome)
            return outcome

        outcome = await self._retry.call(attempt, self._on_retry, wake=self._recovered)
        return unsent, outcome

    def _settle(self, batch: Batch, outcome: Outcome) -> Batch:
        """Dead-letter and count what ``outcome`` settled; return what to send again."""
        if outcome.verdict is not Verdict.ANSWERED:
            return batch
        if outcome.rejected:
            self._dead_letters.write(
                [(batch.event(r.index), r.reason, r.detail) for r in outcome.rejected]
            )
            self._emit.rejected_by_receiver(self.sink.name, outcome.rejected)
        if outcome.duplicates:
            self._emit.records_duplicate(self.sink.name, outcome.duplicates)
        settled = len(outcome.rejected) + len(outcome.retry) + outcome.duplicates
        self._emit.records_sent(self.sink.name, max(len(batch) - settled, 0))
        return batch.select(outcome.retry)

    def _note_health(self, outcome: Outcome, *, items: int) -> None:
        """The sink is up when the receiver took anything of ``items``; failing otherwise."""
        if outcome.verdict is Verdict.SPLIT:
            return
        if outcome.verdict is Verdict.ANSWERED and len(outcome.retry) < items:
            self._on_success()
            return
        now = time.monotonic()
        if self.health.failing_since is None:
            self.health.failing_since = now
        self.health.last_error = _problem(outcome, items)
        self.health.config_problem = outcome.verdict is Verdict.OPERATOR_NEEDED
        self._emit.sink_failing(self.sink.name)

    def _on_retry(self, outcome: Outcome, wait_s: float) -> None:
        self._emit.sink_retry(
            self.sink.name, outcome.verdict.value, _problem(outcome, None), wait_s
        )

    def _saved(self, seq: int) -> None:
        self.health.checkpoint_seq = seq
        self._emit.checkpoint(self.sink.name, seq)

    def _on_success(self) -> None:
        recovered = self.health.failing_since is not None
        if recovered:
            # Batches still backing off retry now instead of after their full wait.
            self._recovered.set()
            self._recovered.clear()
        self.health.failing_since = None
        self.health.last_error = None
        self.health.config_problem = False
        self._emit.sink_delivering(self.sink.name, recovered=recovered)

    def _dead_letter(self, batch: Batch, reason: str, detail: str) -> None:
        self._dead_letters.write([(event, reason, detail) for event in batch.events])
        self._emit.dead_lettered(self.sink.name, reason, detail, len(batch))


def _problem(outcome: Outcome, items: int | None) -> str:
    """Words for what is wrong: the receiver's detail, or how many items it sent back."""
    if outcome.verdict is Verdict.ANSWERED:
        of = f" of {items}" if items is not None else ""
        what = f"{len(outcome.retry)}{of} events to send again"
        return f"{what}: {outcome.detail}" if outcome.detail else what
    return outcome.detail or outcome.verdict.value
