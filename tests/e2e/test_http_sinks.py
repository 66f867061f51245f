"""End to end: records injected into the real /dev/kmsg, through the forwarder, to each receiver.

The forwarder runs as a subprocess with ``[metrics] listen`` on loopback; the receivers
are the strict ones of tests/receivers, scripted to fail the way the issue describes.
Every test waits for the records to arrive (no timing is asserted), then checks the
receiver's view, the dead-letter file and the forwarder's own metrics against each other.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.receivers.base import Reply
from tests.receivers.elasticsearch import ElasticsearchReceiver, ItemRule
from tests.receivers.http import HttpReceiver
from tests.receivers.loki import LokiReceiver
from tests.support.kernel import inject, requires_kernel, unique_tag

pytestmark = [requires_kernel, pytest.mark.kernel]
WAIT_S = 60.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Forwarder:
    """One ``kmsg-forwarder run`` subprocess and its metrics endpoint."""

    def __init__(self, process: asyncio.subprocess.Process, metrics_url: str, state_dir: Path):
        self.process = process
        self.metrics_url = metrics_url
        self.state_dir = state_dir

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample, keyed by (name, sorted labels)."""
        async with aiohttp.ClientSession() as session, session.get(self.metrics_url) as response:
            text = await response.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when the series does not exist yet)."""
        return (await self.metrics()).get((name, tuple(sorted(labels.items()))), 0.0)

    def dead_letters(self, sink: str) -> list[dict[str, Any]]:
        """The sink's dead-letter entries."""
        path = self.state_dir / "deadletter" / f"{sink}.ndjson"
        if not path.exists():
            return []
        return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@asynccontextmanager
async def forwarder(tmp_path: Path, sink: str, name: str = "first") -> AsyncIterator[Forwarder]:
    """Run the forwarder with one sink table until the block ends (SIGTERM, then wait).

    Every run shares ``tmp_path/state``; ``name`` tells their config and log files apart.
    """
    port = free_port()
    state_dir = tmp_path / "state"
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'host = "e2e-node"\nstate_dir = "{state_dir}"\n'
        "[batch]\nmax_records = 50\nlinger_ms = 50\n"
        "[retry]\ninitial_backoff_ms = 50\nmax_backoff_ms = 500\n"
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n' + sink
    )
    with (tmp_path / f"{name}.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "forwarder", "run", "--config", str(config),
            "--log-format", "json", stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    running = Forwarder(process, f"http://127.0.0.1:{port}/metrics", state_dir)
    try:
        await until(lambda: _listening(port), "the metrics endpoint to listen")
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


def rewind(run: Forwarder, sink: str, seq: int) -> None:
    """Move a stopped forwarder's checkpoint back to ``seq``, keeping its boot and clock offset."""
    path = run.state_dir / "checkpoints" / f"{sink}.json"
    checkpoint = orjson.loads(path.read_bytes())
    checkpoint["seq"] = seq
    path.write_bytes(orjson.dumps(checkpoint))


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def until(condition: Callable[[], Any], what: str) -> None:
    """Poll ``condition`` (sync or async) until true; fail after WAIT_S naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


async def test_loki_end_to_end_with_retries_partial_400_and_identical_resend(tmp_path: Path):
    """Records reach Loki through 429/503 retries; a partial 400 dead-letters exactly the bad ones."""
    tag = unique_tag()
    good = [f"{tag} good {i}" for i in range(20)]
    bad = [f"{tag} bad {i}" for i in range(6)]
    async with LokiReceiver(tenant_id="e2e") as loki:
        loki.ignore_lines_containing.add(f"{tag} bad")
        loki.script(Reply(429, "slow down", {"Retry-After": "1"}), Reply(503, "unavailable"))
        sink = f'[sinks.loki]\ntype = "loki"\nendpoint = "{loki.url}"\ntenant_id = "e2e"\n'
        async with forwarder(tmp_path, sink) as run:
            await until(lambda: loki.scripted_left == 0, "the scripted failures to be used")
            inject(good + bad)
            await until(lambda: len(loki.entries(f"{tag} good")) == len(good), "every good record")
            await until(
                lambda: (
                    len([d for d in run.dead_letters("loki") if tag in d["event"]["message"]])
                    == len(bad)
                ),
                "the bad records in the dead-letter file",
            )
            assert await run.value("kmsg_forwarder_sink_retries_total", sink="loki") == 2
            dead = await run.value(
                "kmsg_forwarder_records_dead_lettered_total", sink="loki", reason="loki_400"
            )
            assert dead == len(bad)
            assert await run.value("kmsg_forwarder_records_sent_total", sink="loki") >= len(good)
        first = [(e.timestamp_ns, e.line, e.metadata) for e in loki.entries(tag)]
        assert [line for _, line, _ in first] == good
        tagged = [d for d in run.dead_letters("loki") if tag in d["event"]["message"]]
        assert sorted(d["event"]["message"] for d in tagged) == sorted(bad)
        assert all("too far behind" in d["detail"] and d["reason"] == "loki_400" for d in tagged)
        # As after a crash before the checkpoint moved: the same records are sent again.
        rewind(run, "loki", min(int(e.metadata["seq"]) for e in loki.entries(tag)) - 1)
        duplicates_before = loki.duplicates
        async with forwarder(tmp_path, sink, name="again"):
            await until(
                lambda: loki.duplicates - duplicates_before >= len(good), "the re-sent records"
            )
        assert [(e.timestamp_ns, e.line, e.metadata) for e in loki.entries(tag)] == first


async def test_loki_413_splits_until_batches_fit(tmp_path: Path):
    """A Loki that refuses bodies over a size gets split batches and still every record."""
    tag = unique_tag()
    messages = [f"{tag} split {i} " + "p" * 300 for i in range(40)]
    async with LokiReceiver(max_body_bytes=6000) as loki:
        sink = f'[sinks.loki]\ntype = "loki"\nendpoint = "{loki.url}"\nencoding = "json"\n'
        async with forwarder(tmp_path, sink) as run:
            inject(messages)
            await until(lambda: len(loki.entries(f"{tag} split")) == len(messages), "every record")
            assert await run.value("kmsg_forwarder_batch_splits_total", sink="loki") > 0
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
        sink = f'[sinks.es]\ntype = "elasticsearch"\nendpoint = "{es.url}"\n'
        async with forwarder(tmp_path, sink) as run:
            await until(lambda: es.scripted_left == 0, "the scripted failure to be used")
            inject(messages)
            stored = [m for m in messages if "broken" not in m]
            await until(
                lambda: len(es.docs_containing(tag)) == len(stored), "every storable record"
            )
            await until(
                lambda: run.value(
                    "kmsg_forwarder_records_dead_lettered_total", sink="es", reason="es_mapping"
                ),
                "the mapping errors to be counted",
            )
            assert (
                await run.value(
                    "kmsg_forwarder_records_dead_lettered_total", sink="es", reason="es_mapping"
                )
                == 2
            )
            # one retry for the refused bulk, one per bulk that carried a 429/503 item
            assert (
                await run.value("kmsg_forwarder_sink_retries_total", sink="es")
                == 1 + es.bulks_with_retryable_items
            )
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
        rewind(run, "es", min(int(doc["seq"]) for doc in docs_before.values()) - 1)
        async with forwarder(tmp_path, sink, name="again") as again:
            await until(
                lambda: all(es.tries[i] > tries_before[i] for i in docs_before),
                "every record re-sent",
            )
            assert await again.value("kmsg_forwarder_records_duplicate_total", sink="es") >= len(
                docs_before
            )
        assert {doc["id"]: doc for doc in es.docs_containing(tag)} == docs_before


async def test_http_end_to_end_with_retries_and_a_fatal_batch(tmp_path: Path):
    """503 and 429 are retried; a 400 dead-letters exactly one batch; nothing is lost."""
    tag = unique_tag()
    messages = [f"{tag} http {i}" for i in range(30)]
    async with HttpReceiver(path="/in") as receiver:
        sink = f'[sinks.web]\ntype = "http"\nendpoint = "{receiver.url}/in"\ncompression = "gzip"\n'
        async with forwarder(tmp_path, sink) as run:
            await until(lambda: receiver.events, "the ring's records to start arriving")
            receiver.script(
                Reply(503, "down"), Reply(429, "", {"Retry-After": "1"}), Reply(400, "no")
            )
            inject(messages)
            await until(lambda: receiver.scripted_left == 0, "the scripted failures to be used")

            def delivered_or_dead() -> bool:
                arrived = {e["message"] for e in receiver.events.values()}
                dead = {d["event"].get("message") for d in run.dead_letters("web")}
                return set(messages) <= arrived | dead

            await until(delivered_or_dead, "every record delivered or dead-lettered")
            dead_letters = run.dead_letters("web")
            ids = set(receiver.events)
            assert await run.value("kmsg_forwarder_sink_retries_total", sink="web") == 2
            assert await run.value(
                "kmsg_forwarder_records_dead_lettered_total", sink="web", reason="http_4xx"
            ) == len(dead_letters)
            assert 1 <= len(dead_letters) <= 50
            assert not {d["event"]["id"] for d in dead_letters} & ids
