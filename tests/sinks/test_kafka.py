"""The Kafka sink against a real broker (Tansu), plus injected failures through the factory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from forwarder.config import parse_config
from forwarder.encoding.chunk import Slice
from forwarder.encoding.reference import Event, Identity, encode_gap, encode_record
from forwarder.errors import ConfigError
from forwarder.sinks import KafkaSinkConfig
from forwarder.sinks.base import Batch, SinkContext, outcome_of
from forwarder.sinks.kafka.config import best_compression
from forwarder.sinks.kafka.sink import (
    KafkaSink,
    Producer,
    RecordBatch,
    aiokafka_producer,
)
from forwarder.sinks.outcome import Outcome, Verdict
from forwarder.source.parser import Record
from tests.support.events import make_chunk, make_kernel_event
from tests.support.kafka_broker import (
    KafkaBroker,
    ProxiedBroker,
    consume,
    kafka_broker,
    proxied_kafka_broker,
)
from tests.support.tcp_proxy import free_port

__all__ = ["kafka_broker", "proxied_kafka_broker"]  # fixtures used by name below

pytestmark = pytest.mark.timeout(120)  # a real broker starts for most tests

BOOT_ID = "0b5e7c1a-2f4d-4c1e-9a7b-3d2e1f0a9b8c"
IDENTITY = Identity(host="node-1", boot_id=BOOT_ID, clock_offset_ns=1_790_000_000_000_000_000)


def events(first_seq: int, count: int, *, size: int = 40) -> list[Event]:
    """``count`` kernel records from ``first_seq`` on, each message about ``size`` bytes."""
    return [
        encode_record(
            Record(1, 6, seq, 1_000_000 + seq, "-", f"record {seq} ".ljust(size, "x")), IDENTITY
        )
        for seq in range(first_seq, first_seq + count)
    ]


def sink_config(bootstrap: str, topic: str, **options: Any) -> KafkaSinkConfig:
    """A sink table as a user would write it (idempotence off: Tansu refuses InitProducerId)."""
    table = {
        "type": "kafka",
        "bootstrap_servers": bootstrap,
        "topic": topic,
        "enable_idempotence": False,
        **options,
    }
    config = parse_config({"sinks": {"kafka": table}}).sinks["kafka"]
    assert isinstance(config, KafkaSinkConfig)
    return config


def build(config: KafkaSinkConfig, **kwargs: Any) -> KafkaSink:
    """The sink the forwarder would build, on host ``node-1``."""
    if kwargs:
        return KafkaSink("kafka", config, key="node-1", **kwargs)
    sink = config.build("kafka", SinkContext(host="node-1", state_dir=Path("/nonexistent")))
    assert isinstance(sink, KafkaSink)
    return sink


def all_of(count: int) -> Any:
    """A ``done`` predicate: at least ``count`` messages read."""
    return lambda messages: len(messages) >= count


# --- configuration -------------------------------------------------------------------------


def test_defaults_are_the_durable_ones() -> None:
    """Defaults: acks=all, idempotence on, the best codec, host-name key, boot_id/seq/event/content-type headers."""
    config = parse_config(
        {"sinks": {"k": {"type": "kafka", "bootstrap_servers": ["b:9092"], "topic": "t"}}}
    ).sinks["k"]
    assert isinstance(config, KafkaSinkConfig)
    assert config.acks == "all"
    assert config.enable_idempotence is True
    assert config.compression == best_compression() == "zstd"
    assert config.headers == ["boot_id", "seq", "event", "content-type"]
    options = config.producer_options()
    assert options["compression_type"] == "zstd"
    assert options["max_batch_size"] <= options["max_request_size"]
    assert "security_protocol" not in options


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"topic": "t"}, "sinks.k.bootstrap_servers: Field required"),
        ({"topic": "t", "bootstrap_servers": []}, "sinks.k.bootstrap_servers"),
        ({"topic": "t", "bootstrap_servers": "b:9092", "compression": "brotli"}, "compression"),
        ({"topic": "t", "bootstrap_servers": "nohost"}, "must be HOST:PORT"),
        ({"topic": "bad topic!", "bootstrap_servers": "b:9092"}, "sinks.k.topic"),
        ({"topic": "t", "bootstrap_servers": "b:9092", "acks": 1}, "enable_idempotence needs"),
        ({"topic": "t", "bootstrap_servers": "b:9092", "linger": 5}, "sinks.k.linger"),
    ],
)
def test_bad_config_is_a_config_error_naming_the_key(table: dict[str, Any], expected: str) -> None:
    """Missing servers, unknown codec, bad topic or inconsistent options fail with the key path."""
    with pytest.raises(ConfigError, match=expected):
        parse_config({"sinks": {"k": {"type": "kafka", **table}}})


def test_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    """A SASL password_file that cannot be read fails at load time, naming the key."""
    table = {
        "type": "kafka",
        "bootstrap_servers": "b:9092",
        "topic": "t",
        "sasl": {"username": "u", "password_file": str(tmp_path / "missing")},
    }
    with pytest.raises(ConfigError, match=r"sinks\.k\.sasl: .*cannot read password_file"):
        parse_config({"sinks": {"k": table}})


def test_sasl_and_tls_map_to_producer_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SASL with the password from a file or ${ENV}, plus TLS, gives SASL_SSL with that password."""
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    monkeypatch.setenv("KAFKA_PASSWORD", "from-env")
    for sasl, password in [
        (
            {"mechanism": "SCRAM-SHA-256", "username": "u", "password_file": str(secret)},
            "from-file",
        ),
        ({"mechanism": "PLAIN", "username": "u", "password": "${KAFKA_PASSWORD}"}, "from-env"),
    ]:
        table = {"type": "kafka", "bootstrap_servers": "b:9093", "topic": "t", "sasl": sasl}
        config = parse_config({"sinks": {"k": {**table, "tls": {"verify": False}}}}).sinks["k"]
        assert isinstance(config, KafkaSinkConfig)
        options = config.producer_options()
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == sasl["mechanism"]
        assert options["sasl_plain_password"] == password
        assert password not in repr(config)


# --- against the real broker ---------------------------------------------------------------


async def test_batch_arrives_once_in_order_with_key_and_headers(kafka_broker: KafkaBroker) -> None:
    """Every event becomes one message, in seq order in one partition, keyed by host, with headers."""
    topic = kafka_broker.create_topic()
    sink = build(sink_config(kafka_broker.bootstrap, topic))
    batch = events(100, 300)
    gap = encode_gap(
        host="node-1",
        boot_id=BOOT_ID,
        first_seq=400,
        last_seq=409,
        reason="overwritten",
        timestamp_ns=IDENTITY.clock_offset_ns,
        checkpoint_boot_id=BOOT_ID,
        checkpoint_seq=409,
    )
    oops = make_kernel_event("kernel_oops", 410, who=IDENTITY)
    await sink.start()
    try:
        assert await sink.send(Batch(batch)) == Outcome.delivered()
        assert await sink.send(Batch([gap, oops])) == Outcome.delivered()
    finally:
        await sink.close()
    messages = await consume(kafka_broker.bootstrap, topic, done=all_of(302))
    assert [m.value for m in messages] == [e.json for e in batch] + [gap.json, oops.json]
    assert len({m.partition for m in messages}) == 1
    assert {m.key for m in messages} == {b"node-1"}
    first = dict(messages[0].headers)
    assert first == {
        "boot_id": BOOT_ID.encode(),
        "seq": b"100",
        "event": b"kmsg",
        "content-type": b"application/json",
    }
    assert dict(messages[-2].headers) == {
        "boot_id": BOOT_ID.encode(),
        "event": b"gap",
        "content-type": b"application/json",
    }
    assert orjson.loads(messages[-2].value)["event"] == "gap"
    assert dict(messages[-1].headers) == {
        "boot_id": BOOT_ID.encode(),
        "event": b"kernel_event",
        "content-type": b"application/json",
    }


async def test_event_id_and_class_headers_come_from_the_event(kafka_broker: KafkaBroker) -> None:
    """The event, id and class headers: a record has kind and id, a kernel event also its class."""
    topic = kafka_broker.create_topic()
    sink = build(sink_config(kafka_broker.bootstrap, topic, headers=["event", "id", "class"]))
    record, oops = events(7, 1)[0], make_kernel_event("kernel_oops", 8, who=IDENTITY)
    await sink.start()
    try:
        assert await sink.send(Batch([record, oops])) == Outcome.delivered()
    finally:
        await sink.close()
    messages = await consume(kafka_broker.bootstrap, topic, done=all_of(2))
    assert dict(messages[0].headers) == {"event": b"kmsg", "id": record.id.encode()}
    assert dict(messages[1].headers) == {
        "event": b"kernel_event",
        "id": f"{BOOT_ID}-8-kernel_oops".encode(),
        "class": b"kernel_oops",
    }


async def test_too_large_record_is_rejected_and_the_rest_delivered(
    kafka_broker: KafkaBroker,
) -> None:
    """A record over max_request_bytes is handed back as a rejection; its neighbours are stored."""
    topic = kafka_broker.create_topic()
    sink = build(
        sink_config(kafka_broker.bootstrap, topic, max_request_bytes=4096, max_batch_bytes=2048)
    )
    batch = [*events(1, 2), *events(3, 1, size=6000), *events(4, 2)]
    try:
        result = await sink.send(Batch(batch))
    finally:
        await sink.close()
    assert [(r.index, r.reason) for r in result.rejected] == [(2, "kafka_record_too_large")]
    messages = await consume(kafka_broker.bootstrap, topic, done=all_of(4))
    assert [m.value for m in messages] == [e.json for e in batch if e is not batch[2]]


async def test_record_batches_keep_order_in_the_partition_send_picks(
    kafka_broker: KafkaBroker,
) -> None:
    """A batch spread over many record batches arrives in order, in the partition send() picks for the key."""
    topic = kafka_broker.create_topic(partitions=3)
    sink = build(sink_config(kafka_broker.bootstrap, topic, max_batch_bytes=1024))
    batch = events(1, 200, size=100)
    try:
        assert await sink.send(Batch(batch)) == Outcome.delivered()
    finally:
        await sink.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        reference = await producer.send_and_wait(topic, b"reference", b"node-1")
    finally:
        await producer.stop()
    messages = await consume(kafka_broker.bootstrap, topic, done=all_of(201))
    assert {m.partition for m in messages} == {reference.partition}
    assert [m.value for m in messages] == [e.json for e in batch] + [b"reference"]


async def test_outage_is_unavailable_then_heals(proxied_kafka_broker: ProxiedBroker) -> None:
    """While the network is cut send and start come back 'unavailable'; after it heals, nothing is missing."""
    broker, proxy = proxied_kafka_broker.broker, proxied_kafka_broker.proxy
    topic = broker.create_topic()
    config = sink_config(broker.bootstrap, topic, request_timeout_ms=1000, delivery_timeout_ms=2000)
    sink = build(config)
    try:
        await sink.send(Batch(events(1, 50)))
        proxy.cut()
        for attempt in range(3):
            outcome = await outcome_of(sink, sink.send(Batch(events(51, 50))))
            assert outcome.verdict is Verdict.UNAVAILABLE
            if attempt == 0:
                outcome = await outcome_of(sink, sink.start())
                assert outcome.verdict is Verdict.UNAVAILABLE
        proxy.restore()
        await sink.send(Batch(events(51, 50)))
        await sink.send(Batch(events(101, 50)))
    finally:
        await sink.close()
    messages = await consume(broker.bootstrap, topic, done=all_of(150))
    seqs = [orjson.loads(m.value)["seq"] for m in messages]
    assert sorted(set(seqs)) == list(range(1, 151))


async def test_unreachable_broker_at_start_is_retryable() -> None:
    """Nothing listening on the bootstrap address: start() and send() are classified 'unavailable'."""
    config = sink_config(
        f"127.0.0.1:{free_port()}", "t", request_timeout_ms=1000, delivery_timeout_ms=1500
    )
    sink = build(config)
    started = await outcome_of(sink, sink.start())
    assert started.verdict is Verdict.UNAVAILABLE
    assert "127.0.0.1" in started.detail
    sent = await outcome_of(sink, sink.send(Batch(events(1, 1))))
    assert sent.verdict is Verdict.UNAVAILABLE
    await sink.close()


async def test_broker_without_idempotence_is_a_config_problem(kafka_broker: KafkaBroker) -> None:
    """Tansu refuses InitProducerId: with idempotence on, send says an operator must set it off."""
    topic = kafka_broker.create_topic()
    sink = build(sink_config(kafka_broker.bootstrap, topic, enable_idempotence=True))
    try:
        outcome = await outcome_of(sink, sink.send(Batch(events(1, 3))))
        assert outcome.verdict is Verdict.OPERATOR_NEEDED
        assert "enable_idempotence = false" in outcome.detail
    finally:
        await sink.close()


# --- injected failures (the producer factory seam) ----------------------------------------


class ScriptedBatch:
    """A record batch full at ``capacity`` messages or ``max_bytes`` (max_batch_bytes) of values."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.values: list[bytes] = []
        self.headers: list[list[tuple[str, bytes]]] = []
        self.size = 0
        self.closed = False

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> object | None:
        """Take the message unless full (an empty batch takes any)."""
        assert timestamp is None
        assert isinstance(headers, list)
        assert key == b"node-1"
        assert value is not None
        full = len(self.values) >= self.capacity or self.size + len(value) > self.max_bytes
        if self.values and full:
            return None
        self.values.append(value)
        self.headers.append(list(headers))
        self.size += len(value)
        return len(self.values)

    def close(self) -> None:
        """Take no more messages (the sink closes each record batch it queues)."""
        self.closed = True


class ScriptedProducer:
    """A Producer whose sends fail as scripted: at queue time or in the future."""

    def __init__(
        self,
        *,
        start_error: Exception | None = None,
        send_error: Exception | None = None,
        future_error: Exception | None = None,
        batch_capacity: int = 1000,
    ) -> None:
        self.start_error = start_error
        self.send_error = send_error
        self.future_error = future_error
        self.batch_capacity = batch_capacity
        self.sent: list[bytes] = []
        self.headers: list[list[tuple[str, bytes]]] = []
        self.batches: list[tuple[int, int]] = []
        self.stopped = False
        self.start_hangs = False

    async def start(self) -> None:
        """Fail, or never answer, if scripted to."""
        if self.start_error is not None:
            raise self.start_error
        if self.start_hangs:
            await asyncio.Event().wait()

    async def stop(self) -> None:
        """Remember the stop."""
        self.stopped = True

    async def partitions_for(self, _topic: str) -> set[int]:
        """Three partitions."""
        return {0, 1, 2}

    def create_batch(self) -> RecordBatch:
        """An empty scripted record batch."""
        return ScriptedBatch(self.batch_capacity, CONFIG.max_batch_bytes)

    async def send_batch(
        self, batch: RecordBatch, _topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        """Queue or fail as scripted; remember (partition, messages) of each queued batch."""
        if self.send_error is not None:
            raise self.send_error
        assert isinstance(batch, ScriptedBatch)
        assert batch.closed
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.future_error is not None:
            future.set_exception(self.future_error)
        else:
            self.sent.extend(batch.values)
            self.headers.extend(batch.headers)
            self.batches.append((partition, len(batch.values)))
            future.set_result(None)
        return future


class Factory:
    """Hands out scripted producers in order and remembers the options it was given."""

    def __init__(self, *producers: ScriptedProducer) -> None:
        self.producers = list(producers)
        self.made: list[ScriptedProducer] = []
        self.options: list[dict[str, Any]] = []

    def __call__(self, options: dict[str, Any]) -> Producer:
        self.options.append(options)
        producer = self.producers.pop(0) if self.producers else ScriptedProducer()
        self.made.append(producer)
        return producer


CONFIG = sink_config("127.0.0.1:9", "logs")
OPERATOR, UNAVAILABLE = Verdict.OPERATOR_NEEDED, Verdict.UNAVAILABLE


@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        (kafka_errors.UnknownTopicOrPartitionError(), OPERATOR, "does not exist"),
        (kafka_errors.TopicAuthorizationFailedError("logs"), OPERATOR, "TopicAuthorization"),
        (kafka_errors.SaslAuthenticationFailed(), OPERATOR, "SaslAuthentication"),
        (kafka_errors.KafkaConnectionError("reset"), UNAVAILABLE, "reset"),
        (kafka_errors.KafkaTimeoutError(), UNAVAILABLE, "KafkaTimeoutError"),
        (kafka_errors.NotLeaderForPartitionError(), UNAVAILABLE, "NotLeader"),
        (ConnectionRefusedError(111, "refused"), UNAVAILABLE, "refused"),
        (kafka_errors.ProducerClosed(), UNAVAILABLE, "ProducerClosed"),
        (kafka_errors.CorruptRecordException(), OPERATOR, "unexpected broker answer"),
    ],
)
@pytest.mark.parametrize("where", ["start", "send", "future"])
async def test_failures_are_classified(
    error: Exception, expected: Verdict, message: str, where: str
) -> None:
    """Auth and unknown topic need an operator, transient ones are retried, none is dropped."""
    scripted = ScriptedProducer(**{f"{where}_error": error})
    factory = Factory(scripted)
    sink = build(CONFIG, producer_factory=factory)
    outcome = await outcome_of(sink, sink.send(Batch(events(1, 3))))
    assert outcome.verdict is expected
    assert message in outcome.detail
    await sink.close()
    assert scripted.stopped


async def test_broker_that_never_answers_at_connect_is_retryable() -> None:
    """A connect that hangs is 'unavailable' after delivery_timeout_ms, not a stuck sink."""
    hanging = ScriptedProducer()
    hanging.start_hangs = True
    config = sink_config("127.0.0.1:9", "logs", request_timeout_ms=100, delivery_timeout_ms=200)
    sink = build(config, producer_factory=Factory(hanging))
    outcome = await outcome_of(sink, sink.start())
    assert outcome.verdict is Verdict.UNAVAILABLE
    assert "no answer" in outcome.detail
    await sink.close()
    assert hanging.stopped


async def test_failed_attempt_starts_a_new_producer_session() -> None:
    """After a failure the old producer is stopped and the retry goes through a fresh one."""
    factory = Factory(ScriptedProducer(future_error=kafka_errors.RequestTimedOutError()))
    sink = build(CONFIG, producer_factory=factory)
    outcome = await outcome_of(sink, sink.send(Batch(events(1, 3))))
    assert outcome.verdict is Verdict.UNAVAILABLE
    assert await sink.send(Batch(events(1, 3))) == Outcome.delivered()
    await sink.close()
    assert len(factory.made) == 2
    assert factory.made[0].stopped
    assert len(factory.made[1].sent) == 3
    assert factory.options[0] == factory.options[1]


async def test_full_record_batches_are_queued_in_order_around_a_rejection() -> None:
    """Each full record batch is queued as the next opens; a record over max_request_bytes is left out."""
    scripted = ScriptedProducer(batch_capacity=2)
    sink = build(CONFIG, producer_factory=Factory(scripted))
    batch = [*events(1, 3), *events(4, 1, size=CONFIG.max_request_bytes), *events(5, 2)]
    result = await sink.send(Batch(batch))
    await sink.close()
    assert [(r.index, r.reason) for r in result.rejected] == [(3, "kafka_record_too_large")]
    assert "MessageSizeTooLargeError" in result.rejected[0].detail
    assert scripted.sent == [e.json for e in batch if e is not batch[3]]
    assert [count for _, count in scripted.batches] == [2, 1, 2]
    assert len({partition for partition, _ in scripted.batches}) == 1


async def test_slices_are_produced_with_the_values_and_headers_of_their_events() -> None:
    """A batch of chunk slices (and a gap) gives the same messages and headers as its events."""
    headers = ["boot_id", "seq", "id", "event", "host", "level", "facility", "content-type"]
    config = sink_config("127.0.0.1:9", "logs", headers=headers)
    records = [
        Record(index % 30, index % 8, 7 + index, 99 + index, "-", f"r{index}") for index in range(9)
    ]
    chunk = make_chunk(records, IDENTITY)
    gap = encode_gap(host="node-1", boot_id=BOOT_ID, first_seq=1, last_seq=6,
                     reason="overwritten", timestamp_ns=IDENTITY.clock_offset_ns,
                     checkpoint_boot_id=BOOT_ID, checkpoint_seq=6)  # fmt: skip
    produced = []
    for batch in (
        Batch([gap, Slice(chunk, 0, 4), Slice(chunk, 4, 9)]),
        Batch([gap, *(chunk.event(index) for index in range(9))]),
    ):
        scripted = ScriptedProducer(batch_capacity=4)
        sink = build(config, producer_factory=Factory(scripted))
        assert await sink.send(batch) == Outcome.delivered()
        await sink.close()
        produced.append((scripted.sent, scripted.headers))
    assert produced[0] == produced[1]
    assert produced[0][1][2] == [
        ("boot_id", BOOT_ID.encode()), ("seq", b"8"), ("id", f"{BOOT_ID}-8".encode()),
        ("event", b"kmsg"), ("host", b"node-1"), ("level", b"alert"), ("facility", b"user"),
        ("content-type", b"application/json"),
    ]  # fmt: skip


async def test_broker_size_refusal_splits_then_dead_letters() -> None:
    """The broker refusing a message set for its size splits the batch; a single record is rejected."""
    too_large = kafka_errors.MessageSizeTooLargeError()
    factory = Factory(ScriptedProducer(future_error=too_large))
    sink = build(CONFIG, producer_factory=factory)
    assert (await sink.send(Batch(events(1, 2)))).verdict is Verdict.SPLIT
    result = await sink.send(Batch(events(1, 1)))
    assert [(r.index, r.reason) for r in result.rejected] == [(0, "kafka_record_too_large")]
    await sink.close()


def test_real_factory_builds_an_aiokafka_producer() -> None:
    """The default factory passes the options to AIOKafkaProducer unchanged."""

    async def make() -> None:
        producer = aiokafka_producer(CONFIG.producer_options())
        await producer.stop()

    asyncio.run(make())
