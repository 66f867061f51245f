"""Deliver one sink's batches: retry, split, dead-letter, and move its checkpoint in order.

The pipeline runs one :class:`SinkWorker` per sink. Up to ``max_in_flight`` batches are
sent at once, but the checkpoint only moves when the OLDEST batch in flight is done, so
it never passes an event that is not confirmed (or dead-lettered). This module is the
only writer of checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

import structlog

from forwarder.batcher import Batcher, PendingBatch
from forwarder.checkpoint import CheckpointStore
from forwarder.deadletter import DeadLetterFile
from forwarder.encode import Event
from forwarder.errors import (
    BatchTooLargeError,
    FatalSinkError,
    ForwarderError,
    RetryableSinkError,
    SinkConfigError,
)
from forwarder.metrics import Metrics
from forwarder.options import BatchConfig
from forwarder.retry import RetryPolicy
from forwarder.sinks.base import Batch, Rejection, Sink

log = structlog.get_logger("forwarder.delivery")


@dataclass(slots=True)
class SinkHealth:
    """What /readyz says about one sink."""

    failing_since: float | None = None
    last_error: str | None = None
    config_problem: bool = False
    checkpoint_seq: int | None = None


class _PartialRetryError(RetryableSinkError):
    """Some events of a send must be sent again (the rest was stored).

    Not a failure of the sink unless it stored nothing at all (e.g. every Elasticsearch
    item answered 429): then it counts as failing, for /readyz and ``sink_up``.
    """

    def __init__(self, message: str, *, retry_after_s: float | None, stored_any: bool) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.stored_any = stored_any


class SinkWorker:
    """Sends one sink's batches and keeps its checkpoint."""

    def __init__(
        self,
        sink: Sink,
        batch_config: BatchConfig,
        *,
        store: CheckpointStore,
        retry: RetryPolicy,
        dead_letters: DeadLetterFile,
        metrics: Metrics,
        clock_offset_ns: int,
    ) -> None:
        self.sink = sink
        self.batcher = Batcher(batch_config)
        self.health = SinkHealth()
        self._max_in_flight = batch_config.max_in_flight
        self._store = store
        self._retry = retry
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._clock_offset_ns = clock_offset_ns
        self._recovered = asyncio.Event()

    async def run(self) -> None:
        """Start the sink, then deliver batches until the stream ends."""
        await self._retry.call(self.sink.start, self._on_failure, wake=self._recovered)
        self._on_success()
        slots = asyncio.Semaphore(self._max_in_flight)
        last_commit: asyncio.Task[None] | None = None
        try:
            while (batch := await self.batcher.next_batch()) is not None:
                await slots.acquire()
                if last_commit is not None and last_commit.done():
                    last_commit.result()  # a failed checkpoint write stops this sink
                send = asyncio.create_task(self._deliver(batch.events))
                last_commit = asyncio.create_task(self._commit(batch, send, last_commit, slots))
            if last_commit is not None:
                await last_commit
        finally:
            if last_commit is not None and not last_commit.done():
                # Cancelling the newest commit cancels the chain of earlier commits it awaits,
                # and each cancels its send: nothing keeps sending to a closed sink.
                last_commit.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await last_commit
            await self.sink.close()

    async def _commit(
        self,
        batch: PendingBatch,
        send: asyncio.Task[None],
        previous: asyncio.Task[None] | None,
        slots: asyncio.Semaphore,
    ) -> None:
        """Save the checkpoint once this batch AND every earlier one are done."""
        try:
            await send
            if previous is not None:
                await previous
            await asyncio.to_thread(
                self._store.save,
                self.sink.name,
                batch.boot_id,
                batch.checkpoint_seq,
                self._clock_offset_ns,
            )
        except asyncio.CancelledError:
            send.cancel()
            raise
        finally:
            slots.release()
        self.health.checkpoint_seq = batch.checkpoint_seq
        self._metrics.checkpoint_seq.labels(self.sink.name).set(batch.checkpoint_seq)
        if batch.filtered:
            self._metrics.records_filtered.labels(self.sink.name).inc(batch.filtered)

    async def _deliver(self, events: list[Event]) -> None:
        """Deliver events, splitting on 'too large'; return when all are stored or dead."""
        parts = deque([list(events)]) if events else deque()
        while parts:
            # _send_with_retry cuts `part` down to the events still unsent after a partial
            # success: only those may be split or dead-lettered, the rest is already settled.
            part = parts.popleft()
            started = time.monotonic()
            try:
                await self._send_with_retry(part)
            except BatchTooLargeError as error:
                if len(part) == 1:
                    self._dead_letter(part, "too_large", str(error))
                    continue
                self._metrics.batch_splits.labels(self.sink.name).inc()
                half = len(part) // 2
                parts.extendleft((part[half:], part[:half]))
                continue
            except FatalSinkError as error:
                self._dead_letter(part, "fatal", str(error))
                continue
            except RetryableSinkError as error:  # the retry budget is spent
                self._dead_letter(part, "retry_budget_exhausted", str(error))
                continue
            self._metrics.batch_latency.labels(self.sink.name).observe(time.monotonic() - started)

    async def _send_with_retry(self, remaining: list[Event]) -> None:
        """Send until stored; ``remaining`` is cut down in place to what must be sent again."""

        async def attempt() -> None:
            try:
                result = await self.sink.send(Batch(remaining))
            except ForwarderError:
                raise  # a SinkError is classified; any other branch stops the forwarder
            except Exception as error:
                # A failure the sink did not classify: keep the data and retry, loudly.
                log.exception("sink_unclassified_error", sink=self.sink.name)
                raise RetryableSinkError(f"unexpected {type(error).__name__}: {error}") from error
            if len(result.retry) < len(remaining):
                self._on_success()  # the receiver took something: it is up
            if result.rejected:
                self._dead_letter_rejections(result.rejected)
            if result.duplicates:
                self._metrics.records_duplicate.labels(self.sink.name).inc(result.duplicates)
            sent = len(remaining) - len(result.rejected) - len(result.retry) - result.duplicates
            self._metrics.records_sent.labels(self.sink.name).inc(max(sent, 0))
            if result.retry:
                remaining[:] = result.retry
                raise _PartialRetryError(
                    f"{len(result.retry)} events to send again",
                    retry_after_s=result.retry_after_s,
                    stored_any=len(result.retry) < len(remaining),
                )

        await self._retry.call(attempt, self._on_failure, wake=self._recovered)

    def _on_failure(self, error: RetryableSinkError, wait_s: float) -> None:
        now = time.monotonic()
        partial = isinstance(error, _PartialRetryError) and error.stored_any
        if self.health.failing_since is None and not partial:
            self.health.failing_since = now
        self.health.last_error = str(error)
        self.health.config_problem = isinstance(error, SinkConfigError)
        self._metrics.sink_retries.labels(self.sink.name).inc()
        if not partial:
            self._metrics.sink_up.labels(self.sink.name).set(0)
        log.warning("sink_retry", sink=self.sink.name, error=str(error), wait_s=round(wait_s, 3))

    def _on_success(self) -> None:
        if self.health.failing_since is not None:
            log.info("sink_recovered", sink=self.sink.name)
            # Batches still backing off retry now instead of after their full wait.
            self._recovered.set()
            self._recovered.clear()
        self.health.failing_since = None
        self.health.last_error = None
        self.health.config_problem = False
        self._metrics.sink_up.labels(self.sink.name).set(1)

    def _dead_letter(self, events: list[Event], reason: str, detail: str) -> None:
        self._dead_letters.write([(event, reason, detail) for event in events])
        self._metrics.records_dead_lettered.labels(self.sink.name, reason).inc(len(events))
        log.error(
            "dead_lettered", sink=self.sink.name, reason=reason, detail=detail, events=len(events)
        )

    def _dead_letter_rejections(self, entries: list[Rejection]) -> None:
        self._dead_letters.write([(r.event, r.reason, r.detail) for r in entries])
        for rejection in entries:
            self._metrics.records_dead_lettered.labels(self.sink.name, rejection.reason).inc()
        log.error(
            "rejected_by_receiver",
            sink=self.sink.name,
            events=len(entries),
            reasons=sorted({r.reason for r in entries}),
            first_detail=entries[0].detail if entries else None,
        )
