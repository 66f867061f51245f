"""SinkWorker: how it acts on each Outcome (retry, split, dead-letter, health) and keeps checkpoints in order."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time

import orjson
import pytest

from forwarder.config import RetryConfig
from forwarder.delivery.checkpoint import CheckpointStore
from forwarder.delivery.dead_letters import DeadLetterFile
from forwarder.delivery.retry import RetryPolicy
from forwarder.delivery.worker import SinkWorker
from forwarder.encoding.reference import encode_gap
from forwarder.errors import OutputClosedError, StateError
from forwarder.options import BatchConfig
from forwarder.routing import Position
from forwarder.sinks.base import Batch, Sink
from forwarder.sinks.file import FileSink
from forwarder.sinks.outcome import Outcome, Rejection
from forwarder.sinks.stdout import StdoutSink
from forwarder.telemetry.events import Emitter
from forwarder.telemetry.metrics import Metrics
from tests.support.events import as_slice, identity, make_events
from tests.support.wait import wait_until_async

WHO = identity()


class StoringSink(Sink):
    """Stores every batch it is sent; subclasses decide when to fail."""

    def __init__(self, name="fake"):
        super().__init__(name)
        self.sent: list[list] = []  # every send attempt, as received
        self.stored: list = []  # events acknowledged
        self.attempt_times: list[float] = []
        self.closed = False

    async def send(self, batch: Batch) -> Outcome:
        """Record the attempt, then let the subclass answer."""
        self.sent.append(list(batch.events))
        self.attempt_times.append(time.monotonic())
        return await self.answer(list(batch.events))

    async def answer(self, events):
        """Store everything."""
        self.stored.extend(events)
        return Outcome.delivered()

    async def close(self):
        """Remember that the worker closed us."""
        self.closed = True


class FlakySink(StoringSink):
    """Answers the first ``failures`` attempts with ``outcome`` (or raises it), then stores."""

    def __init__(self, failures, outcome):
        super().__init__()
        self.failures = failures
        self.outcome = outcome

    async def answer(self, events):
        """Fail while failures remain."""
        if self.failures > 0:
            self.failures -= 1
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return self.outcome
        return await super().answer(events)


class SizeLimitedSink(StoringSink):
    """Refuses batches of more than ``limit`` events, and any event saying 'huge'."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    async def answer(self, events):
        """Too large when over the limit or holding a huge event."""
        if len(events) > self.limit or any("huge" in e.fields.get("message", "") for e in events):
            return Outcome.too_large(f"{len(events)} events is too large")
        return await super().answer(events)


class PoisonSink(StoringSink):
    """Refuses for good every event of any batch holding a 'poison' event."""

    async def answer(self, events):
        """Refuse poisoned batches whole."""
        if any("poison" in e.fields["message"] for e in events):
            return Outcome.refused(range(len(events)), "mapping", "mapping conflict")
        return await super().answer(events)


class MisconfiguredSink(StoringSink):
    """Refuses with 401 (a configuration problem) until ``fixed`` is set."""

    def __init__(self):
        super().__init__()
        self.fixed = False

    async def answer(self, events):
        """Refuse until fixed."""
        if not self.fixed:
            return Outcome.operator_needed("401 unauthorized")
        return await super().answer(events)


class Harness:
    """A SinkWorker over real checkpoint and dead-letter files in a temp state dir."""

    def __init__(
        self,
        tmp_path,
        sink,
        *,
        max_records=100,
        max_in_flight=2,
        budget_s=0.0,
        store_class=CheckpointStore,
    ):
        self.sink = sink
        self.state_dir = tmp_path / "state"
        self.store = store_class(self.state_dir)
        self.store.prepare()
        self.dead_letters = DeadLetterFile(self.state_dir, sink.name)
        self.metrics = Metrics()
        self.worker = SinkWorker(
            sink,
            BatchConfig(max_records=max_records, max_in_flight=max_in_flight),
            store=self.store,
            retry=RetryPolicy(
                RetryConfig(initial_backoff_ms=1, max_backoff_ms=5, budget_s=budget_s)
            ),
            dead_letters=self.dead_letters,
            emit=Emitter(self.metrics),
            clock_offset_ns=WHO.clock_offset_ns,
        )

    async def deliver(self, *chunks):
        """Queue the chunks, end the stream and run the worker to completion."""
        for chunk in chunks:
            await self.worker.batcher.put(chunk)
        await self.worker.batcher.close()
        await self.worker.run()

    def metric(self, name, **labels):
        """A sample of the worker's metrics (0 when never set)."""
        value = self.metrics.registry.get_sample_value(
            f"kmsg_forwarder_{name}", {"sink": self.sink.name, **labels}
        )
        return value or 0

    def dead(self):
        """(reason, id) of every dead-lettered event."""
        if not self.dead_letters.path.exists():
            return []
        lines = self.dead_letters.path.read_bytes().splitlines()
        return [(entry["reason"], entry["event"]["id"]) for entry in map(orjson.loads, lines)]

    def checkpoint_seq(self):
        """The saved checkpoint seq, None when none was saved."""
        checkpoint = self.store.load(self.sink.name)
        return None if checkpoint is None else checkpoint.seq


def events(count, first_seq=100, message="event"):
    """Consecutive events of one boot."""
    return make_events([f"{message} {i}" for i in range(count)], who=WHO, first_seq=first_seq)


FORMS = ["events", "slices"]


def items(sample, form):
    """The events as the reader's fast path queues them (one chunk slice), or one by one."""
    return [as_slice(sample, WHO)] if form == "slices" else sample


def ids(items):
    """Ids of events."""
    return [event.id for event in items]


async def test_everything_is_delivered_and_checkpointed(tmp_path):
    """A healthy sink gets every event once, in order, and the checkpoint ends at the last seq."""
    sample = events(10)
    harness = Harness(tmp_path, StoringSink(), max_records=3)
    await harness.deliver(sample[:4], sample[4:])
    assert ids(harness.sink.stored) == ids(sample)
    assert harness.checkpoint_seq() == 109
    assert harness.metric("records_sent_total") == 10
    assert harness.worker.health.checkpoint_seq == 109
    assert harness.sink.closed


async def test_retryable_errors_are_retried_then_delivered(tmp_path):
    """Transient failures are retried (and counted) until the batch is stored; nothing is dropped."""
    sample = events(5)
    harness = Harness(tmp_path, FlakySink(3, Outcome.unavailable("503 busy")))
    await harness.deliver(sample)
    assert ids(harness.sink.stored) == ids(sample)
    assert len(harness.sink.sent) == 4
    assert harness.metric("sink_retries_total") == 3
    assert harness.metric("records_sent_total") == 5
    assert harness.metric("sink_up") == 1
    assert harness.worker.health.failing_since is None
    assert harness.dead() == []
    assert harness.checkpoint_seq() == 104


async def test_retry_after_is_honoured(tmp_path):
    """A server's Retry-After makes the next attempt wait at least that long despite tiny backoff."""
    harness = Harness(tmp_path, FlakySink(1, Outcome.unavailable("429", retry_after_s=0.3)))
    await harness.deliver(events(2))
    first, second = harness.sink.attempt_times
    assert second - first >= 0.3
    assert len(harness.sink.stored) == 2


async def test_start_failures_are_retried(tmp_path):
    """A sink whose start() fails transiently is retried before sending."""

    class SlowStartSink(StoringSink):
        starts = 0

        async def start(self):
            self.starts += 1
            if self.starts < 3:
                raise ConnectionRefusedError(111, "connection refused")

    harness = Harness(tmp_path, SlowStartSink())
    await harness.deliver(events(2))
    assert harness.sink.starts == 3
    assert len(harness.sink.stored) == 2
    assert harness.metric("sink_retries_total") == 2


@pytest.mark.parametrize("form", FORMS)
async def test_too_large_batches_are_split_in_halves(tmp_path, form):
    """A batch the receiver finds too large is halved until it fits, keeping the order."""
    sample = events(5)
    harness = Harness(tmp_path, SizeLimitedSink(limit=2))
    await harness.deliver(items(sample, form))
    assert ids(harness.sink.stored) == ids(sample)
    assert [len(attempt) for attempt in harness.sink.sent] == [5, 2, 3, 1, 2]
    assert harness.metric("batch_splits_total") == 2
    assert harness.dead() == []
    assert harness.checkpoint_seq() == 104


@pytest.mark.parametrize("form", FORMS)
async def test_single_too_large_event_is_dead_lettered(tmp_path, form):
    """One event too large on its own goes to the dead-letter file; the rest is delivered."""
    sample = make_events(["a", "b", "huge one", "c"], who=WHO)
    harness = Harness(tmp_path, SizeLimitedSink(limit=10))
    await harness.deliver(items(sample, form))
    assert ids(harness.sink.stored) == ids([sample[0], sample[1], sample[3]])
    assert harness.dead() == [("too_large", sample[2].id)]
    assert harness.metric("records_dead_lettered_total", reason="too_large") == 1
    assert harness.checkpoint_seq() == 103


class BadRequestSink(StoringSink):
    """Refuses any request holding a 'bad' event whole, naming no item (an OTLP 400)."""

    async def answer(self, events):
        """Split me while a bad event is in the request."""
        if any("bad" in e.fields.get("message", "") for e in events):
            return Outcome.split("HTTP 400: invalid record", reason="otlp_400")
        return await super().answer(events)


@pytest.mark.parametrize("form", FORMS)
async def test_a_split_answer_saves_the_good_records_and_dead_letters_with_its_reason(
    tmp_path, form
):
    """A request refused whole is halved until the bad record stands alone, dead-lettered as the answer says."""
    sample = make_events(["a", "b", "bad one", "c", "d"], who=WHO)
    harness = Harness(tmp_path, BadRequestSink())
    await harness.deliver(items(sample, form))
    assert ids(harness.sink.stored) == ids([*sample[:2], *sample[3:]])
    assert harness.dead() == [("otlp_400", sample[2].id)]
    assert harness.metric("records_dead_lettered_total", reason="otlp_400") == 1
    assert harness.checkpoint_seq() == 104


@pytest.mark.parametrize("form", FORMS)
async def test_refused_batch_is_dead_lettered_and_delivery_moves_on(tmp_path, form):
    """A batch refused whole goes to dead-letter; later batches go on and the checkpoint passes it."""
    sample = events(6)
    poisoned = make_events(["ok", "poison"], who=WHO, first_seq=102)
    chunk = [*sample[:2], *poisoned, *events(2, first_seq=104)]
    harness = Harness(tmp_path, PoisonSink(), max_records=2)
    await harness.deliver(items(chunk, form))
    assert ids(harness.sink.stored) == ids([*chunk[:2], *chunk[4:]])
    assert harness.dead() == [("mapping", poisoned[0].id), ("mapping", poisoned[1].id)]
    assert harness.metric("records_dead_lettered_total", reason="mapping") == 2
    assert harness.checkpoint_seq() == 105


@pytest.mark.parametrize("form", FORMS)
async def test_dead_letter_entries_carry_the_event_and_detail(tmp_path, form):
    """A dead-letter line holds sink, reason, the receiver's detail and the event itself."""
    poisoned = make_events(["poison"], who=WHO)
    harness = Harness(tmp_path, PoisonSink())
    await harness.deliver(items(poisoned, form))
    entry = orjson.loads(harness.dead_letters.path.read_bytes())
    assert entry["sink"] == "fake"
    assert entry["reason"] == "mapping"
    assert entry["detail"] == "mapping conflict"
    assert entry["event"] == poisoned[0].fields
    assert entry["at"].endswith("Z")


@pytest.mark.parametrize("form", FORMS)
async def test_rejected_events_are_dead_lettered_with_their_reason(tmp_path, form):
    """Rejections (by index) go to dead-letter under the sink's reason label; the rest counts as sent."""

    class RejectingSink(StoringSink):
        async def answer(self, events):
            bad = [i for i, e in enumerate(events) if "bad" in e.fields["message"]]
            self.stored.extend(e for i, e in enumerate(events) if i not in bad)
            return Outcome.answered(rejected=[Rejection(i, "http_4xx", "400 mapping") for i in bad])

    sample = make_events(["good", "bad", "good", "bad"], who=WHO)
    harness = Harness(tmp_path, RejectingSink())
    await harness.deliver(items(sample, form))
    assert harness.dead() == [("http_4xx", sample[1].id), ("http_4xx", sample[3].id)]
    assert harness.metric("records_dead_lettered_total", reason="http_4xx") == 2
    assert harness.metric("records_sent_total") == 2
    assert len(harness.sink.sent) == 1
    assert harness.checkpoint_seq() == 103


@pytest.mark.parametrize("form", FORMS)
async def test_partial_retry_resends_only_those_events(tmp_path, form):
    """Outcome.retry (indices) makes the worker resend exactly those events, then the batch is done."""

    class PartialSink(StoringSink):
        async def answer(self, events):
            if len(self.sent) == 1:
                self.stored.extend(e for i, e in enumerate(events) if i not in {1, 3})
                return Outcome.answered(retry=[1, 3])
            return await super().answer(events)

    sample = events(5)
    harness = Harness(tmp_path, PartialSink())
    await harness.deliver(items(sample, form))
    assert [ids(attempt) for attempt in harness.sink.sent] == [
        ids(sample),
        ids([sample[1], sample[3]]),
    ]
    assert sorted(ids(harness.sink.stored)) == sorted(ids(sample))
    assert harness.metric("records_sent_total") == 5
    assert harness.metric("sink_retries_total") == 1
    assert harness.dead() == []
    assert harness.checkpoint_seq() == 104


async def test_duplicates_are_counted_not_sent(tmp_path):
    """Events the receiver already had (e.g. ES 409) count as duplicates, not as sent."""

    class DuplicateSink(StoringSink):
        async def answer(self, events):
            await super().answer(events)
            return Outcome.answered(duplicates=2)

    harness = Harness(tmp_path, DuplicateSink())
    await harness.deliver(events(5))
    assert harness.metric("records_duplicate_total") == 2
    assert harness.metric("records_sent_total") == 3
    assert harness.checkpoint_seq() == 104


async def test_checkpoint_waits_for_an_earlier_slow_batch(tmp_path):
    """With two batches in flight, the later one finishing first never moves the checkpoint past the earlier one."""

    class FirstSlowSink(StoringSink):
        def __init__(self):
            super().__init__()
            self.release = asyncio.Event()
            self.second_done = asyncio.Event()

        async def answer(self, events):
            if events[0].checkpoint_seq == 100:
                await self.release.wait()
            result = await super().answer(events)
            if events[0].checkpoint_seq == 103:
                self.second_done.set()
            return result

    class RecordingStore(CheckpointStore):
        """Notes, at every save, the seqs the sink had stored by then."""

        def __init__(self, state_dir):
            super().__init__(state_dir)
            self.saves = []

        def save(self, sink_name, boot_id, seq, clock_offset_ns):
            self.saves.append((seq, {e.checkpoint_seq for e in sink.stored}))
            return super().save(sink_name, boot_id, seq, clock_offset_ns)

    sink = FirstSlowSink()
    harness = Harness(tmp_path, sink, max_records=3, max_in_flight=2, store_class=RecordingStore)
    run = asyncio.create_task(harness.deliver(events(6)))
    await asyncio.wait_for(sink.second_done.wait(), timeout=10)
    await wait_until_async(
        lambda: harness.metric("records_sent_total") == 3, what="the later batch to be confirmed"
    )
    assert harness.worker.health.checkpoint_seq is None
    sink.release.set()
    await run
    assert [e.checkpoint_seq for e in sink.stored] == [103, 104, 105, 100, 101, 102]
    for seq, stored in harness.store.saves:
        assert set(range(100, seq + 1)) <= stored, f"checkpoint {seq} saved before all of it stored"
    assert harness.checkpoint_seq() == 105


async def test_the_next_batch_is_sent_while_a_checkpoint_is_written(tmp_path):
    """A slow checkpoint write does not hold the next send, even one batch at a time; saves stay in order."""
    second_sent = threading.Event()

    class SecondSeenSink(StoringSink):
        async def answer(self, events):
            if events[0].checkpoint_seq == 103:
                second_sent.set()
            return await super().answer(events)

    class SlowStore(CheckpointStore):
        """The first save waits (bounded) for the second batch to be sent."""

        def __init__(self, state_dir):
            super().__init__(state_dir)
            self.saves = []

        def save(self, sink_name, boot_id, seq, clock_offset_ns):
            if not self.saves:
                self.saves.append((seq, second_sent.wait(timeout=10)))
            else:
                self.saves.append((seq, True))
            return super().save(sink_name, boot_id, seq, clock_offset_ns)

    harness = Harness(
        tmp_path, SecondSeenSink(), max_records=3, max_in_flight=1, store_class=SlowStore
    )
    await harness.deliver(events(6))
    assert harness.store.saves == [(102, True), (105, True)]
    assert harness.checkpoint_seq() == 105


async def test_retry_budget_exhausted_dead_letters(tmp_path):
    """When the retry budget is spent the batch is dead-lettered as retry_budget_exhausted and the checkpoint moves."""
    sample = events(3)
    harness = Harness(tmp_path, FlakySink(10**9, Outcome.unavailable("down")), budget_s=0.2)
    await harness.deliver(sample)
    assert harness.dead() == [("retry_budget_exhausted", e.id) for e in sample]
    assert harness.metric("records_dead_lettered_total", reason="retry_budget_exhausted") == 3
    assert harness.metric("sink_up") == 0
    assert harness.checkpoint_seq() == 102


@pytest.mark.parametrize("form", FORMS)
async def test_budget_exhausted_after_partial_retry_dead_letters_only_the_rest(tmp_path, form):
    """After a partial success, an exhausted budget dead-letters only the events still unsent."""

    class PartialThenDownSink(StoringSink):
        async def answer(self, events):
            if len(self.sent) == 1:
                self.stored.extend(events[:2])
                return Outcome.answered(retry=[2])
            return Outcome.unavailable("down")

    sample = events(3)
    harness = Harness(tmp_path, PartialThenDownSink(), budget_s=0.2)
    await harness.deliver(items(sample, form))
    assert harness.dead() == [("retry_budget_exhausted", sample[2].id)]
    assert harness.metric("records_dead_lettered_total", reason="retry_budget_exhausted") == 1
    assert harness.metric("records_sent_total") == 2
    assert harness.checkpoint_seq() == 102


@pytest.mark.parametrize("form", FORMS)
async def test_split_after_partial_retry_resends_only_the_rest(tmp_path, form):
    """A 'too large' answer after a partial success splits only the events still unsent."""

    class PartialThenTooLargeSink(StoringSink):
        async def answer(self, events):
            if len(self.sent) == 1:
                self.stored.extend(events[:2])
                return Outcome.answered(retry=[2, 3])
            if len(events) > 1:
                return Outcome.too_large("too large")
            return await super().answer(events)

    sample = events(4)
    harness = Harness(tmp_path, PartialThenTooLargeSink())
    await harness.deliver(items(sample, form))
    assert ids(harness.sink.stored) == ids(sample)
    assert harness.dead() == []


async def test_config_error_is_retried_and_shown_as_config_problem(tmp_path):
    """An operator-needed answer keeps the data (retried) and marks health.config_problem until it recovers."""
    sink = MisconfiguredSink()
    sample = events(2)
    harness = Harness(tmp_path, sink)
    run = asyncio.create_task(harness.deliver(sample))
    await wait_until_async(lambda: harness.worker.health.config_problem, what="config_problem")
    assert harness.worker.health.last_error == "401 unauthorized"
    assert harness.worker.health.failing_since is not None
    sink.fixed = True
    await run
    assert harness.worker.health.config_problem is False
    assert ids(sink.stored) == ids(sample)
    assert harness.dead() == []


async def test_positions_only_move_the_checkpoint(tmp_path):
    """A batch of filtered records is never sent (no empty Batch) but moves the checkpoint and counts."""
    harness = Harness(tmp_path, StoringSink())
    await harness.deliver([Position(WHO.boot_id, 7), Position(WHO.boot_id, 8)])
    assert harness.sink.sent == []
    assert harness.checkpoint_seq() == 8
    assert harness.metric("records_filtered_total") == 2


async def test_reboot_gap_moves_checkpoint_to_the_new_boot(tmp_path):
    """Delivering a reboot gap saves a checkpoint of the new boot at seq -1."""
    gap = encode_gap(
        host="node-1",
        boot_id="old-boot",
        first_seq=51,
        last_seq=None,
        reason="reboot",
        timestamp_ns=0,
        checkpoint_boot_id=WHO.boot_id,
        checkpoint_seq=-1,
    )
    harness = Harness(tmp_path, StoringSink())
    await harness.deliver([gap])
    checkpoint = harness.store.load("fake")
    assert (checkpoint.boot_id, checkpoint.seq) == (WHO.boot_id, -1)
    assert checkpoint.clock_offset_ns == WHO.clock_offset_ns


async def test_a_receiver_that_stores_nothing_of_a_partial_answer_counts_as_failing(tmp_path):
    """Every item answered 'retry' (e.g. all Elasticsearch items 429) marks the sink failing."""

    class OverloadedSink(StoringSink):
        def __init__(self):
            super().__init__()
            self.recovered = False

        async def answer(self, events):
            if not self.recovered:
                return Outcome.answered(retry=range(len(events)))
            return await super().answer(events)

    sink = OverloadedSink()
    harness = Harness(tmp_path, sink)
    run = asyncio.create_task(harness.deliver(events(3)))
    await wait_until_async(
        lambda: harness.worker.health.failing_since is not None, what="the sink to be failing"
    )
    assert harness.metric("sink_up") == 0
    sink.recovered = True
    await run
    assert harness.worker.health.failing_since is None
    assert harness.metric("sink_up") == 1
    assert len(sink.stored) == 3


async def test_config_error_is_never_dead_lettered_by_the_retry_budget(tmp_path):
    """With a retry budget, an auth failure outlives it: data kept until a person fixes it."""
    sink = MisconfiguredSink()
    harness = Harness(tmp_path, sink, budget_s=0.05)
    run = asyncio.create_task(harness.deliver(events(2)))
    # 30 attempts at <= 5 ms backoff: well past the 50 ms budget.
    await wait_until_async(lambda: len(sink.sent) >= 30, what="30 send attempts")
    sink.fixed = True
    await run
    assert harness.dead() == []
    assert len(sink.stored) == 2


async def test_a_partial_retry_that_stored_something_keeps_the_sink_up(tmp_path):
    """3 of 10 events answered 'send again' (e.g. Elasticsearch 429s): the sink stays up and ready while they are retried."""

    class PartlyBusySink(StoringSink):
        def __init__(self):
            super().__init__()
            self.retrying = asyncio.Event()
            self.release = asyncio.Event()

        async def answer(self, events):
            if len(self.sent) == 1:
                self.stored.extend(events[3:])
                return Outcome.answered(retry=[0, 1, 2], detail="items answered HTTP 429")
            self.retrying.set()
            await self.release.wait()
            return await super().answer(events)

    sink = PartlyBusySink()
    harness = Harness(tmp_path, sink)
    sample = events(10)
    run = asyncio.create_task(harness.deliver(sample))
    await asyncio.wait_for(sink.retrying.wait(), timeout=10)
    assert harness.worker.health.failing_since is None
    assert harness.worker.health.last_error is None
    assert harness.metric("sink_up") == 1
    assert ids(sink.sent[1]) == ids(sample[:3])
    sink.release.set()
    await run
    assert sorted(ids(sink.stored)) == sorted(ids(sample))
    assert harness.metric("sink_up") == 1
    assert harness.metric("records_sent_total") == 10


class CountingFileSink(FileSink):
    """A real file sink that records how many of its sends ran at once."""

    def __init__(self, path):
        super().__init__("file", path)
        self.running = 0
        self.most_running = 0

    async def send(self, batch: Batch) -> Outcome:
        """Count this send while the real one runs."""
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            return await super().send(batch)
        finally:
            self.running -= 1


async def test_the_file_sink_never_has_two_writes_in_flight(tmp_path):
    """Even with [batch] max_in_flight = 4 file batches are written one at a time (a failed write's truncate cannot cut another), every line once and in order."""
    sink = CountingFileSink(tmp_path / "out.ndjson")
    harness = Harness(tmp_path, sink, max_records=5, max_in_flight=4)
    sample = events(40)
    await harness.deliver(*(sample[i : i + 5] for i in range(0, 40, 5)))
    assert sink.most_running == 1
    written = (tmp_path / "out.ndjson").read_bytes().splitlines()
    assert [orjson.loads(line)["id"] for line in written] == ids(sample)
    assert harness.checkpoint_seq() == 139


def test_the_in_flight_window_is_bounded_by_what_the_sink_allows(tmp_path):
    """File and stdout take one batch at a time whatever [batch] says; other sinks get [batch] max_in_flight up to their own bound."""

    class TwoAtATimeSink(StoringSink):
        max_in_flight = 2

    def window(sink, configured):
        return Harness(tmp_path, sink, max_in_flight=configured).worker.max_in_flight

    assert window(FileSink("file", tmp_path / "out.ndjson"), 4) == 1
    assert window(StdoutSink("stdout", io.BytesIO()), 4) == 1
    assert window(StoringSink(), 4) == 4
    assert window(TwoAtATimeSink(), 4) == 2
    assert window(TwoAtATimeSink(), 1) == 1


async def test_an_exception_out_of_send_is_no_answer_and_retried(tmp_path):
    """Any exception escaping send() (here a bug's TypeError) means 'no answer': retried and counted, never a crash or a loss."""
    sample = events(3)
    harness = Harness(tmp_path, FlakySink(2, TypeError("boom")))
    await harness.deliver(sample)
    assert ids(harness.sink.stored) == ids(sample)
    assert harness.metric("sink_retries_total") == 2
    assert harness.dead() == []
    assert harness.checkpoint_seq() == 102


async def test_a_closed_stdout_stops_the_worker(tmp_path):
    """The one exception that is not 'no answer': stdout closed by its reader ends the worker (and the forwarder)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "wb", buffering=0) as stream:
        harness = Harness(tmp_path, StdoutSink("stdout", stream))
        with pytest.raises(OutputClosedError):
            await harness.deliver(events(2))
    assert harness.checkpoint_seq() is None


async def test_a_checkpoint_that_cannot_be_written_stops_the_worker(tmp_path):
    """A failed checkpoint write ends the worker with the error (the forwarder then exits), after closing the sink."""

    class BrokenStore(CheckpointStore):
        def save(self, sink_name, *_position):
            """Every write fails, as on a full or read-only disk."""
            raise StateError(f"cannot write checkpoint for {sink_name}")

    harness = Harness(tmp_path, StoringSink(), max_records=2, store_class=BrokenStore)
    with pytest.raises(StateError, match="cannot write checkpoint"):
        await asyncio.wait_for(harness.deliver(events(6)), timeout=30)
    assert harness.sink.closed
