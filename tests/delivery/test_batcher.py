"""The batcher: batches close on count, size, linger or end of stream, and lose nothing."""

from __future__ import annotations

import asyncio
import time

from forwarder.delivery.batcher import Batcher
from forwarder.options import BatchConfig
from forwarder.routing import Position
from tests.support.events import identity, make_events, make_kernel_event, make_slice

WHO = identity()


def events(count, first_seq=100):
    """Consecutive events of one boot."""
    return make_events([f"message {i}" for i in range(count)], who=WHO, first_seq=first_seq)


def config(**options):
    """A batch config with a long linger unless told otherwise."""
    return BatchConfig(**{"linger_ms": 60_000, **options})


def seqs(batch):
    """Seqs of a batch's events."""
    return [event.checkpoint_seq for event in batch.events]


async def test_batch_closes_at_max_records():
    """A batch holds at most max_records events; the rest go to the next batch."""
    batcher = Batcher(config(max_records=3))
    await batcher.put(events(7))
    first = await batcher.next_batch()
    second = await batcher.next_batch()
    assert seqs(first) == [100, 101, 102]
    assert first.checkpoint_seq == 102
    assert first.boot_id == WHO.boot_id
    assert seqs(second) == [103, 104, 105]
    await batcher.close()
    third = await batcher.next_batch()
    assert seqs(third) == [106]
    assert await batcher.next_batch() is None


async def test_batch_closes_before_max_bytes():
    """A batch never grows past max_bytes of JSON (unless one event alone is larger)."""
    sample = events(10)
    size = len(sample[0].json)
    limit = max(1024, size * 3 + size // 2)
    batcher = Batcher(config(max_bytes=limit))
    await batcher.put(sample)
    await batcher.close()
    batches = []
    while (batch := await batcher.next_batch()) is not None:
        batches.append(batch)
    assert [seq for batch in batches for seq in seqs(batch)] == list(range(100, 110))
    for batch in batches:
        assert sum(len(event.json) for event in batch.events) <= limit
    assert len(batches) > 1


async def test_single_event_larger_than_max_bytes_is_its_own_batch():
    """An event larger than max_bytes is still batched (alone), never stuck."""
    big = make_events(["x" * 3000, "small"], who=WHO)
    batcher = Batcher(config(max_bytes=1024))
    await batcher.put(big)
    await batcher.close()
    assert seqs(await batcher.next_batch()) == [100]
    assert seqs(await batcher.next_batch()) == [101]
    assert await batcher.next_batch() is None


async def test_linger_closes_a_partial_batch():
    """A partial batch is returned once linger_ms passed since its first item."""
    batcher = Batcher(config(max_records=100, linger_ms=50))
    started = time.monotonic()  # before the first item: a descheduled test only waits longer
    await batcher.put(events(2))
    batch = await batcher.next_batch()
    assert time.monotonic() - started >= 0.045
    assert seqs(batch) == [100, 101]


async def test_linger_collects_chunks_arriving_meanwhile():
    """Chunks that arrive within the linger time join the same batch."""
    batcher = Batcher(config(max_records=100, linger_ms=300))
    batch_task = asyncio.create_task(batcher.next_batch())
    await batcher.put(events(2))
    await asyncio.sleep(0.01)
    await batcher.put(events(2, first_seq=102))
    assert seqs(await batch_task) == [100, 101, 102, 103]


async def test_end_flushes_without_lingering():
    """close() ends the stream: the partial batch comes at once, then None."""
    batcher = Batcher(config(linger_ms=3_600_000))
    await batcher.put(events(2))
    await batcher.close()
    batch = await asyncio.wait_for(batcher.next_batch(), timeout=60)
    assert seqs(batch) == [100, 101]
    assert await batcher.next_batch() is None


async def test_end_of_empty_stream_gives_none():
    """A stream that ends without items gives no batch at all."""
    batcher = Batcher(config())
    await batcher.close()
    assert await batcher.next_batch() is None


async def test_positions_count_as_filtered_and_move_the_checkpoint():
    """Position markers are not events but are counted and move the batch's checkpoint seq."""
    batcher = Batcher(config())
    sample = events(2)
    await batcher.put(
        [sample[0], Position(WHO.boot_id, 101), Position(WHO.boot_id, 102), sample[1]]
    )
    await batcher.put([Position(WHO.boot_id, 110)])
    await batcher.close()
    batch = await batcher.next_batch()
    assert batch.events == sample
    assert batch.filtered == 3
    assert (batch.boot_id, batch.checkpoint_seq) == (WHO.boot_id, 110)


async def test_positions_only_batch_is_returned():
    """A batch of only filtered records still comes out, so the checkpoint can move."""
    batcher = Batcher(config(linger_ms=10))
    await batcher.put([Position(WHO.boot_id, 7)])
    batch = await batcher.next_batch()
    assert batch.events == []
    assert (batch.filtered, batch.checkpoint_seq) == (1, 7)


async def test_no_chunk_is_lost_at_linger_timeouts():
    """Many short lingers racing with producers never drop or reorder a chunk."""
    batcher = Batcher(config(max_records=7, linger_ms=0))
    total = 2000

    async def produce():
        sample = events(total)
        for start in range(0, total, 5):
            await batcher.put(sample[start : start + 5])
            if start % 3 == 0:
                await asyncio.sleep(0)
        await batcher.close()

    producer = asyncio.create_task(produce())
    received = []
    batch_count = 0
    while (batch := await batcher.next_batch()) is not None:
        assert len(batch.events) <= 7
        batch_count += 1
        received.extend(seqs(batch))
    await producer
    assert received == list(range(100, 100 + total))
    assert batch_count >= total // 7


async def test_cancelled_next_batch_loses_nothing():
    """Cancelling a waiting next_batch (shutdown) keeps the pending chunk for the next call."""
    batcher = Batcher(config(linger_ms=10))
    waiting = asyncio.create_task(batcher.next_batch())
    await asyncio.sleep(0.01)
    waiting.cancel()
    await batcher.put(events(3))
    await batcher.close()
    batch = await batcher.next_batch()
    assert seqs(batch) == [100, 101, 102]


async def test_depth_counts_waiting_items():
    """The depth property counts items queued and carried, for the buffer gauge."""
    batcher = Batcher(config(max_records=2))
    await batcher.put(events(5))
    assert batcher.depth == 5
    await batcher.next_batch()
    assert batcher.depth == 3


async def test_an_event_at_the_position_of_the_record_before_it_shares_its_batch():
    """A kernel event after the record that completed it is never cut off into the next batch."""
    records = events(3)
    report = make_kernel_event("oom_kill", 100, who=WHO, record_count=3)
    assert report.checkpoint_seq == 102
    batcher = Batcher(config(max_records=3))
    await batcher.put([*records, report, *events(1, first_seq=103)])
    await batcher.close()
    first = await batcher.next_batch()
    assert first.events == [*records, report]
    assert first.checkpoint_seq == 102
    second = await batcher.next_batch()
    assert seqs(second) == [103]


def chunk_slice(count, first_seq=100, size=300):
    """``count`` consecutive records of one boot (messages of ``size``) as one chunk slice."""
    messages = [f"message {i}".ljust(size, "x") for i in range(count)]
    return make_slice(messages, who=WHO, first_seq=first_seq)


async def test_slices_are_cut_at_max_records_and_max_bytes_in_order():
    """A large slice is cut into batches by count and by bytes; every record once, in order."""
    whole = chunk_slice(50)
    line_bytes = len(whole.lines()[0]) + 1
    batcher = Batcher(config(max_records=7, max_bytes=line_bytes * 5))
    await batcher.put([whole, Position(WHO.boot_id, 150), chunk_slice(3, first_seq=151)])
    await batcher.close()
    batches = []
    while (batch := await batcher.next_batch()) is not None:
        batches.append(batch)
    assert [seq for batch in batches for seq in seqs(batch)] == [*range(100, 150), 151, 152, 153]
    assert all(0 < batch.count <= 5 and batch.nbytes <= line_bytes * 5 for batch in batches)
    assert [batch.checkpoint_seq for batch in batches][-1] == 153
    assert sum(batch.filtered for batch in batches) == 1
    # Each batch's checkpoint is its last record, or the filtered position right after it.
    assert all(batch.checkpoint_seq - seqs(batch)[-1] in (0, 1) for batch in batches)


async def test_a_record_over_max_bytes_goes_alone():
    """A slice record larger than max_bytes still goes out, alone in its batch."""
    batcher = Batcher(config(max_bytes=1024))
    await batcher.put([chunk_slice(3, size=1100)])
    await batcher.close()
    assert seqs(await batcher.next_batch()) == [100]
    assert seqs(await batcher.next_batch()) == [101]


async def test_touching_slices_become_one_part():
    """Slices of one chunk that touch are sent as one part (one buffer slice per write)."""
    whole = chunk_slice(6)
    batcher = Batcher(config())
    await batcher.put([whole.part(0, 1), whole.part(1, 2)])
    await batcher.put([whole.part(2, 6)])
    await batcher.close()
    batch = await batcher.next_batch()
    assert batch.parts == [whole]
    assert batcher.depth == 0


async def test_depth_counts_records_of_slices():
    """The buffer gauge counts records, not queue items."""
    batcher = Batcher(config(max_records=4))
    await batcher.put([chunk_slice(10)])
    assert batcher.depth == 10
    await batcher.next_batch()
    assert batcher.depth == 6
