"""End to end: records injected into the real /dev/kmsg, through the forwarder, to each receiver.

The forwarder runs as a subprocess with ``[metrics] listen`` on loopback; the receivers
are the strict ones of tests/receivers, scripted to fail the way the issue describes.
Every test waits for the records to arrive (no timing is asserted), then checks the
receiver's view, the dead-letter file and the forwarder's own metrics against each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.receivers.base import Reply
from tests.receivers.elasticsearch import ElasticsearchReceiver, ItemRule
from tests.receivers.http import HttpReceiver
from tests.receivers.loki import LokiReceiver
from tests.support.forwarder import ForwarderProcess, checkpoint, free_port, read_ndjson
from tests.support.kernel import inject, requires_kernel, unique_tag
from tests.support.wait import wait_until_async

pytestmark = [requires_kernel, pytest.mark.kernel, pytest.mark.timeout(180)]  # waits of 60 s
WAIT_S = 60.0


@asynccontextmanager
async def forwarder(
    tmp_path: Path, sinks: dict[str, Any], name: str = "first", **extra: Any
) -> AsyncIterator[ForwarderProcess]:
    """Run the forwarder with these sink tables until the block ends (SIGTERM, then wait).

    Every run shares ``tmp_path/state``; ``name`` is the run's own work directory.
    The helper's calls block, so they run in a thread: the receivers share this loop.
    """
    workdir = tmp_path / name
    workdir.mkdir()
    config = {
        "host": "e2e-node",
        "state_dir": tmp_path / "state",
        "batch": {"max_records": 50, "linger_ms": 50},
        "retry": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "sinks": sinks,
        **extra,
    }
    process = ForwarderProcess(workdir, config).start()
    try:
        await asyncio.to_thread(process.wait_serving)
        yield process
        await asyncio.to_thread(process.stop)
    finally:
        process.cleanup()


async def metric(process: ForwarderProcess, name: str, **labels: str) -> float:
    """One sample of the forwarder's metrics (0 when absent)."""
    return await asyncio.to_thread(process.metric, name, **labels)


async def reaches(process: ForwarderProcess, value: float, name: str, **labels: str) -> None:
    """Wait until a metric equals ``value`` (counters settle a moment after the receiver)."""

    async def equal() -> bool:
        return await metric(process, name, **labels) == value

    await until(equal, f"{name}{labels} == {value}")


def dead_letters(tmp_path: Path, sink: str) -> list[dict[str, Any]]:
    """The sink's dead-letter entries so far."""
    return read_ndjson(tmp_path / "state" / "deadletter" / f"{sink}.ndjson")


def rewind(tmp_path: Path, sink: str, seq: int) -> None:
    """Move a stopped forwarder's checkpoint back to ``seq``, keeping its boot and clock offset."""
    path = tmp_path / "state" / "checkpoints" / f"{sink}.json"
    saved = checkpoint(tmp_path / "state", sink)
    assert saved is not None
    path.write_bytes(orjson.dumps(saved | {"seq": seq}))


async def until(condition: Callable[[], Any], what: str) -> None:
    """Wait (at most WAIT_S) for ``condition`` (sync or async), naming ``what`` on timeout."""
    await wait_until_async(condition, timeout_s=WAIT_S, interval_s=0.1, what=what)


async def test_loki_end_to_end_with_retries_partial_400_and_identical_resend(tmp_path: Path):
    """Records reach Loki through 429/503 retries; a partial 400 dead-letters exactly the bad ones."""
    tag = unique_tag()
    good = [f"{tag} good {i}" for i in range(20)]
    bad = [f"{tag} bad {i}" for i in range(6)]
    async with LokiReceiver(tenant_id="e2e") as loki:
        loki.ignore_lines_containing.add(f"{tag} bad")
        loki.script(Reply(429, "slow down", {"Retry-After": "1"}), Reply(503, "unavailable"))
        sink = {"loki": {"type": "loki", "endpoint": loki.url, "tenant_id": "e2e"}}
        async with forwarder(tmp_path, sink) as run:
            await until(lambda: loki.scripted_left == 0, "the scripted failures to be used")
            inject(good + bad)
            await until(lambda: len(loki.entries(f"{tag} good")) == len(good), "every good record")
            await until(
                lambda: (
                    len([d for d in dead_letters(tmp_path, "loki") if tag in d["event"]["message"]])
                    == len(bad)
                ),
                "the bad records in the dead-letter file",
            )
            await reaches(run, 2, "kmsg_forwarder_sink_retries_total", sink="loki")
            dead = "kmsg_forwarder_records_dead_lettered_total"
            await reaches(run, len(bad), dead, sink="loki", reason="loki_400")
            assert await metric(run, "kmsg_forwarder_records_sent_total", sink="loki") >= len(good)
        first = [(e.timestamp_ns, e.line, e.metadata) for e in loki.entries(tag)]
        assert [line for _, line, _ in first] == good
        tagged = [d for d in dead_letters(tmp_path, "loki") if tag in d["event"]["message"]]
        assert sorted(d["event"]["message"] for d in tagged) == sorted(bad)
        assert all("too far behind" in d["detail"] and d["reason"] == "loki_400" for d in tagged)
        # As after a crash before the checkpoint moved: the same records are sent again.
        rewind(tmp_path, "loki", min(int(e.metadata["seq"]) for e in loki.entries(tag)) - 1)
        duplicates_before = loki.duplicates
        async with forwarder(tmp_path, sink, name="again"):
            await until(
                lambda: loki.duplicates - duplicates_before >= len(good), "the re-sent records"
            )
        assert [(e.timestamp_ns, e.line, e.metadata) for e in loki.entries(tag)] == first


async def test_loki_401_is_a_configuration_problem_that_keeps_the_data(tmp_path: Path):
    """A wrong tenant (401) is retried and shown on /readyz; fixed, every record arrives."""
    tag = unique_tag()
    messages = [f"{tag} kept {i}" for i in range(10)]
    async with LokiReceiver(tenant_id="right") as loki:
        wrong = {"loki": {"type": "loki", "endpoint": loki.url, "tenant_id": "wrong"}}
        async with forwarder(tmp_path, wrong, shutdown_timeout_s=1) as run:
            inject(messages)

            async def not_ready() -> bool:
                status, body = await asyncio.to_thread(run.http_get, "/readyz")
                failing = orjson.loads(body).get("failing_sinks", {}) if status == 503 else {}
                return bool(failing.get("loki", {}).get("config_problem"))

            await until(not_ready, "/readyz to report the configuration problem")
            assert await metric(run, "kmsg_forwarder_sink_retries_total", sink="loki") > 0
            assert dead_letters(tmp_path, "loki") == []
        assert loki.entries(tag) == []
        right = {"loki": {"type": "loki", "endpoint": loki.url, "tenant_id": "right"}}
        async with forwarder(tmp_path, right, name="fixed"):
            await until(lambda: len(loki.entries(tag)) == len(messages), "every kept record")
        assert [entry.line for entry in loki.entries(tag)] == messages


async def test_loki_413_splits_until_batches_fit(tmp_path: Path):
    """A Loki that refuses bodies over a size gets split batches and still every record."""
    tag = unique_tag()
    messages = [f"{tag} split {i} " + "p" * 300 for i in range(40)]
    async with LokiReceiver(max_body_bytes=6000) as loki:
        sink = {"loki": {"type": "loki", "endpoint": loki.url, "encoding": "json"}}
        async with forwarder(tmp_path, sink) as run:
            inject(messages)
            await until(lambda: len(loki.entries(f"{tag} split")) == len(messages), "every record")
            assert await metric(run, "kmsg_forwarder_batch_splits_total", sink="loki") > 0
            assert 413 in loki.statuses
        assert [e.line for e in loki.entries(tag)] == messages


async def test_elasticsearch_end_to_end_with_item_retries_mapping_errors_and_409(tmp_path: Path):
    """429/503 items are retried alone, mapping errors dead-lettered, a re-send is all 409s."""
    tag = unique_tag()
    messages = [f"{tag} doc {i}" for i in range(20)]
    messages += [f"{tag} throttle", f"{tag} shard", f"{tag} broken 1", f"{tag} broken 2"]
    async with ElasticsearchReceiver() as es:
        es.item_rules = [
            ItemRule(f"{tag} throttle", (429,)),
            ItemRule(f"{tag} shard", (503,)),
            ItemRule(f"{tag} broken", (400,), forever=True),
        ]
        es.script(Reply(503, "whole bulk refused"))
        sink = {"es": {"type": "elasticsearch", "endpoint": es.url}}
        async with forwarder(tmp_path, sink) as run:
            await until(lambda: es.scripted_left == 0, "the scripted failure to be used")
            inject(messages)
            stored = [m for m in messages if "broken" not in m]
            await until(
                lambda: len(es.docs_containing(tag)) == len(stored), "every storable record"
            )
            dead = "kmsg_forwarder_records_dead_lettered_total"
            await reaches(run, 2, dead, sink="es", reason="es_mapping")
            # one retry for the refused bulk, one per bulk that carried a 429/503 item
            retries = 1 + es.bulks_with_retryable_items
            await reaches(run, retries, "kmsg_forwarder_sink_retries_total", sink="es")
        assert [doc["message"] for doc in es.docs_containing(tag)] == stored
        # nothing the server stored was sent again: only the scripted items saw a second try
        tagged_ids = {doc["id"] for doc in es.docs_containing(tag)}
        assert {doc_id for doc_id in tagged_ids if es.tries[doc_id] > 1} == {
            doc["id"]
            for doc in es.docs_containing(tag)
            if "throttle" in doc["message"] or "shard" in doc["message"]
        }
        docs_before = {doc["id"]: doc for doc in es.docs_containing(tag)}
        tries_before = dict(es.tries)
        rewind(tmp_path, "es", min(int(doc["seq"]) for doc in docs_before.values()) - 1)
        async with forwarder(tmp_path, sink, name="again") as again:
            await until(
                lambda: all(es.tries[i] > tries_before[i] for i in docs_before),
                "every record re-sent",
            )

            async def all_duplicates() -> bool:
                duplicates = await metric(
                    again, "kmsg_forwarder_records_duplicate_total", sink="es"
                )
                return duplicates >= len(docs_before)

            await until(all_duplicates, "the re-sent records to be counted as duplicates")
        assert {doc["id"]: doc for doc in es.docs_containing(tag)} == docs_before


async def test_http_end_to_end_with_retries_and_a_fatal_batch(tmp_path: Path):
    """503 and 429 are retried; a 400 dead-letters exactly one batch; nothing is lost."""
    tag = unique_tag()
    messages = [f"{tag} http {i}" for i in range(30)]
    async with HttpReceiver(path="/in") as receiver:
        sink = {"web": {"type": "http", "endpoint": f"{receiver.url}/in", "compression": "gzip"}}
        async with forwarder(tmp_path, sink) as run:
            await until(lambda: receiver.events, "the ring's records to start arriving")
            receiver.script(
                Reply(503, "down"), Reply(429, "", {"Retry-After": "1"}), Reply(400, "no")
            )
            inject(messages)
            await until(lambda: receiver.scripted_left == 0, "the scripted failures to be used")

            def delivered_or_dead() -> bool:
                arrived = {e.get("message") for e in receiver.events.values()}
                dead = {d["event"].get("message") for d in dead_letters(tmp_path, "web")}
                return set(messages) <= arrived | dead

            await until(delivered_or_dead, "every record delivered or dead-lettered")

            async def counted() -> bool:
                dead = await metric(
                    run, "kmsg_forwarder_records_dead_lettered_total", sink="web", reason="http_4xx"
                )
                return dead > 0 and dead == len(dead_letters(tmp_path, "web"))

            await until(counted, "the dead-lettered batch to be counted")
            refused = dead_letters(tmp_path, "web")
            ids = set(receiver.events)
            await reaches(run, 2, "kmsg_forwarder_sink_retries_total", sink="web")
            assert {d["reason"] for d in refused} == {"http_4xx"}
            assert 1 <= len(refused) <= 50
            assert not {d["event"]["id"] for d in refused} & ids
