"""The ``kafka`` sink: one Kafka message per event, produced with aiokafka.

The events of a batch are appended to aiokafka record batches (``create_batch``, at most
``max_batch_bytes`` each, compressed per record batch) and each is queued whole with
``send_batch``: per record only the append runs in Python, not ``send``'s per-message
checks and partitioning. All of a sink's messages have one key, so the partition is the
one ``send`` would hash that key to, computed once per producer session.

A batch is acknowledged only when the future of every one of its record batches resolved
(the broker acknowledged with ``acks``), so the pipeline never checkpoints what the broker
does not have. Failures are classified (:meth:`KafkaSink.classify`, one pure mapping onto
an Outcome), never retried here (Vector's model):

- connection problems, timeouts and ``KafkaError.retriable`` -> unavailable (retried);
- unknown topic, authorization and authentication -> operator needed (retried, not ready);
- a record larger than ``max_request_bytes`` -> a Rejection (dead-lettered); the broker
  refusing a multi-record batch for its size -> too large (the worker splits);
- any other permanent broker answer -> operator needed: a broker that refuses us for a
  reason we do not know must be looked at, not fed our records into a dead-letter file.

After a failed attempt the producer session is abandoned (its queued messages are failed,
not delivered later) and the next ``send`` opens a fresh one, so a retried batch is not
also sitting in the old producer's queue: retries add no duplicates beyond the requests
that were already on the wire. The worker starts and closes the sink; a fresh producer
session within it is the sink's own affair. The producer comes from a factory (a seam
for tests).

Configuration and validation: :mod:`forwarder.sinks.kafka.config`.
Producer API: https://aiokafka.readthedocs.io/en/stable/api.html#producer-class
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from forwarder.encoding.reference import Event
from forwarder.kernel_events.envelope import class_of
from forwarder.sinks.base import Batch, Sink
from forwarder.sinks.outcome import Outcome, Rejection, Verdict, describe
from forwarder.source.parser import LEVEL_NAMES, facility_name

if TYPE_CHECKING:
    # Annotation only: the config module imports this one to build the sink.
    from forwarder.sinks.kafka.config import KafkaSinkConfig

CONTENT_TYPE = b"application/json"
# The name the sink logged under before the split; log filters keep matching.
_log = structlog.get_logger("forwarder.sinks.kafka.config")
_CONFIG_ERRORS: tuple[type[Exception], ...] = (
    kafka_errors.UnknownTopicOrPartitionError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.IllegalSaslStateError,
    kafka_errors.InvalidTopicError,
)
_IDEMPOTENCE_SUSPECTS: tuple[type[Exception], ...] = (
    kafka_errors.UnknownError,
    kafka_errors.UnsupportedVersionError,
    kafka_errors.ClusterAuthorizationFailedError,
)
_SIZE_ERRORS: tuple[type[Exception], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
)


_RECORD_POSITION: Final = frozenset({"boot_id", "seq"})


class SessionAbandonedError(kafka_errors.KafkaError):  # type: ignore[misc]
    """A message was queued in a producer session the sink threw away; send it again."""

    retriable = True


class RecordBatch(Protocol):
    """What the sink uses of aiokafka's ``BatchBuilder``."""

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> object | None:
        """Add one message; None when the record batch is full (an empty one takes any)."""

    def close(self) -> None:
        """Take no more messages: the producer sends it without lingering."""


class Producer(Protocol):
    """What the sink uses of ``AIOKafkaProducer`` (the seam tests replace)."""

    async def start(self) -> None:
        """Connect and fetch cluster metadata."""

    async def stop(self) -> None:
        """Flush what is queued and close connections."""

    async def partitions_for(self, topic: str) -> set[int]:
        """Partitions of ``topic``, waiting for its metadata."""

    def create_batch(self) -> RecordBatch:
        """An empty record batch (``max_batch_bytes``, the producer's codec)."""

    async def send_batch(
        self, batch: RecordBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        """Queue a record batch; the future resolves once the broker acknowledged it."""


ProducerFactory = Callable[[dict[str, Any]], Producer]
# The batch indices of one queued record batch's events and the future of its acknowledgement.
_Sent = tuple[range, "asyncio.Future[Any]"]


def aiokafka_producer(options: dict[str, Any]) -> Producer:
    """The real producer factory."""
    producer: Producer = AIOKafkaProducer(**options)
    return producer


class KafkaSink(Sink):
    """Produces each event of a batch as one message and waits for every acknowledgement."""

    def __init__(
        self,
        name: str,
        config: KafkaSinkConfig,
        *,
        key: str,
        producer_factory: ProducerFactory = aiokafka_producer,
    ) -> None:
        super().__init__(name)
        self._config = config
        self._options = config.producer_options()
        self._topic = config.topic
        self._key = key.encode()
        self._max_request_bytes = config.max_request_bytes
        self._header_names = tuple(config.headers)
        self._delivery_timeout_s = config.delivery_timeout_ms / 1000
        self._factory = producer_factory
        self._producer: Producer | None = None
        self._partition = 0
        self._starting: asyncio.Lock | None = None
        self._abandoned: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect and check that the topic exists (a failure is classified and retried)."""
        await self._open_session()

    async def _open_session(self) -> None:
        """Start a producer session unless one is open; bounded by ``delivery_timeout_ms``."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._producer is not None:
                return
            producer = self._factory(self._options)
            try:
                # Bounded like a send: a connection that never answers must become a retry.
                async with asyncio.timeout(self._delivery_timeout_s):
                    await producer.start()
                    partitions = await producer.partitions_for(self._topic)
            except BaseException:
                self._abandon(producer, [])
                raise
            self._producer = producer
            self._partition = _partition_for(self._key, partitions)

    async def send(self, batch: Batch) -> Outcome:
        """Produce the batch; return once the broker answered for every message of it."""
        if self._producer is None:
            await self._open_session()  # the last one was abandoned after a failure
        producer = self._producer
        assert producer is not None
        rejected: list[Rejection] = []
        sent: list[_Sent] = []
        try:
            async with asyncio.timeout(self._delivery_timeout_s):
                await self._produce(producer, batch, sent, rejected)
                if sent:
                    await asyncio.wait([future for _, future in sent])
        except TimeoutError:
            self._drop(producer, sent)
            acked = sum(len(indices) for indices, future in sent if _succeeded(future))
            return Outcome.unavailable(
                f"{len(batch) - acked} of {len(batch)} records not acknowledged"
                f" within delivery_timeout_ms={self._config.delivery_timeout_ms}"
            )
        except Exception:
            self._drop(producer, sent)
            raise
        return self._result(producer, batch, sent, rejected)

    async def close(self) -> None:
        """Abandon the producer (whatever it still holds was not acknowledged) and wait for it."""
        if self._producer is not None:
            self._abandon(self._producer, [])
            self._producer = None
        if self._abandoned:
            await asyncio.wait(set(self._abandoned))

    async def _produce(
        self,
        producer: Producer,
        batch: Batch,
        sent: list[_Sent],
        rejected: list[Rejection],
    ) -> None:
        """Append the records to record batches, queueing each when full; list them in ``sent``."""
        key = self._key
        builder: RecordBatch | None = None
        first = 0  # index of the builder's first record
        for index, (value, headers) in enumerate(self._messages(batch)):
            if builder is not None:
                added = builder.append(timestamp=None, key=key, value=value, headers=headers)
                if added is not None:
                    continue
                # Full: queue it; this record opens the next one.
                sent.append((range(first, index), await self._queue(producer, builder)))
                builder = None
            # An empty record batch takes a record of any size: check it as send() would.
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
            if size > self._max_request_bytes:
                rejected.append(Rejection(index, "kafka_record_too_large", _too_large(size)))
                continue
            builder = producer.create_batch()
            builder.append(timestamp=None, key=key, value=value, headers=headers)
            first = index
        if builder is not None:
            sent.append((range(first, len(batch)), await self._queue(producer, builder)))

    async def _queue(self, producer: Producer, builder: RecordBatch) -> asyncio.Future[Any]:
        # Closed, the record batch goes out at once: the forwarder's batch is already whole,
        # and aiokafka would hold an open one linger_ms for more records that never come.
        builder.close()
        return await producer.send_batch(builder, self._topic, partition=self._partition)

    def _result(
        self,
        producer: Producer,
        batch: Batch,
        sent: list[_Sent],
        rejected: list[Rejection],
    ) -> Outcome:
        failures = [
            (indices, _failure(future)) for indices, future in sent if not _succeeded(future)
        ]
        if not failures:
            return Outcome.answered(rejected=rejected)
        for indices, error in failures:
            if isinstance(error, _SIZE_ERRORS):
                if len(batch) > 1:
                    return Outcome.too_large(f"the broker refused a message set: {error}")
                rejected.extend(Rejection(i, "kafka_record_too_large", str(error)) for i in indices)
        remaining = [error for _, error in failures if not isinstance(error, _SIZE_ERRORS)]
        if not remaining:
            return Outcome.answered(rejected=rejected)
        self._drop(producer, sent)
        classified = [self.classify(error) for error in remaining]
        # A configuration problem is the one a person must see on /readyz first.
        needed = [o for o in classified if o.verdict is Verdict.OPERATOR_NEEDED]
        return (needed or classified)[0]

    def _messages(self, batch: Batch) -> Iterator[tuple[bytes, list[tuple[str, bytes]]]]:
        """Value and headers of every record: a slice's come from its chunk's columns."""
        for part in batch.parts:
            if isinstance(part, Event):
                yield part.json, self._headers(part)
                continue
            chunk = part.chunk
            identity = chunk.identity
            fixed = {
                "boot_id": identity.boot_id.encode(),
                "host": identity.host.encode(),
                "event": b"kmsg",
                "content-type": CONTENT_TYPE,
            }
            # The same for every record of the chunk, but seq, id, level and facility.
            names = self._header_names
            template: list[tuple[str, bytes]] = [(name, fixed.get(name, b"")) for name in names]
            varying = [(at, name) for at, name in enumerate(names) if name not in fixed]
            seqs, prefixes = chunk.seqs, chunk.prefixes
            id_head = fixed["boot_id"] + b"-"
            for index, value in enumerate(part.lines(), part.start):
                headers = template.copy()
                for at, name in varying:
                    headers[at] = (
                        name,
                        _column_header(name, seqs[index], prefixes[index], id_head),
                    )
                yield value, headers

    def _headers(self, event: Event) -> list[tuple[str, bytes]]:
        headers: list[tuple[str, bytes]] = []
        fields: dict[str, object] | None = None
        for name in self._header_names:
            if name == "content-type":
                headers.append((name, CONTENT_TYPE))
            elif name == "event":
                headers.append((name, event.kind.encode()))
            elif name == "id":
                headers.append((name, event.id.encode()))
            elif name == "class":
                if event.kind == "kernel_event":
                    headers.append((name, class_of(event).encode()))
            elif event.kind == "kmsg" and name in _RECORD_POSITION:
                # A record's own boot and seq are its checkpoint position: no JSON to decode.
                position = event.boot_id if name == "boot_id" else str(event.checkpoint_seq)
                headers.append((name, position.encode()))
            else:
                if fields is None:
                    fields = event.fields
                value = fields.get(name)
                if value is not None:
                    headers.append((name, str(value).encode()))
        return headers

    def classify(self, error: BaseException) -> Outcome:
        """Map an aiokafka (or socket) failure, or no answer in time, onto an Outcome."""
        where = f"kafka {','.join(self._config.bootstrap_servers)} topic {self._topic!r}"
        if isinstance(error, TimeoutError):  # only our own delivery_timeout_ms bound raises it
            return Outcome.unavailable(
                f"{where}: no answer within delivery_timeout_ms={self._config.delivery_timeout_ms}"
            )
        if isinstance(error, kafka_errors.UnknownTopicOrPartitionError):
            return Outcome.operator_needed(
                f"{where}: the topic does not exist (or is not visible to us)"
            )
        hint = ""
        if self._config.enable_idempotence and isinstance(error, _IDEMPOTENCE_SUSPECTS):
            hint = " (a broker without idempotent producing needs enable_idempotence = false)"
        if isinstance(error, _CONFIG_ERRORS):
            return Outcome.operator_needed(f"{where}: refused: {describe(error)}{hint}")
        # ProducerClosed: another batch's failure abandoned the session this one was using.
        transient = OSError | kafka_errors.KafkaTimeoutError | kafka_errors.ProducerClosed
        if isinstance(error, transient) or (
            isinstance(error, kafka_errors.KafkaError) and error.retriable
        ):
            return Outcome.unavailable(f"{where}: {describe(error)}")
        return Outcome.operator_needed(
            f"{where}: unexpected broker answer: {describe(error)}{hint}"
        )

    def _drop(self, producer: Producer, sent: list[_Sent]) -> None:
        """Abandon the current producer session; the next send starts a new one."""
        if self._producer is producer:
            self._producer = None
        self._abandon(producer, [future for _, future in sent])

    def _abandon(self, producer: Producer, futures: list[asyncio.Future[Any]]) -> None:
        task = asyncio.get_running_loop().create_task(_stop_now(producer, futures))
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)


async def _stop_now(producer: Producer, futures: list[asyncio.Future[Any]]) -> None:
    """Fail what the producer still queues (it must not be delivered later), then stop it."""
    # aiokafka has no public "abort": stop() would wait for queued messages forever when
    # idempotence is on and the broker is gone.
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(SessionAbandonedError("producer session abandoned"))
    try:
        await producer.stop()
    except Exception as error:
        # Nothing to save: the session's messages were already failed and will be resent.
        _log.warning("kafka_producer_stop_failed", error=describe(error))
    for future in futures:
        if future.done() and not future.cancelled():
            future.exception()  # mark retrieved: asyncio would log each one


def _column_header(name: str, seq: int, prefix: int, id_head: bytes) -> bytes:
    """A header of a chunk record that depends on the record: seq, id, level, facility."""
    if name == "seq":
        return b"%d" % seq
    if name == "id":
        return id_head + b"%d" % seq
    if name == "level":
        return LEVEL_NAMES[prefix & 7].encode()
    return facility_name(prefix >> 3).encode()


def _partition_for(key: bytes, partitions: set[int]) -> int:
    """The partition ``send`` puts ``key`` in: aiokafka's default murmur2 hash of it."""
    ordered = sorted(partitions)
    partition: int = DefaultPartitioner()(key, ordered, ordered)
    return partition


def _too_large(size: int) -> str:
    """The words of aiokafka's ``send`` for a record over ``max_request_size``."""
    return str(
        kafka_errors.MessageSizeTooLargeError(
            f"The message is {size} bytes when serialized which is larger than the maximum"
            " request size you have configured with the max_request_size configuration"
        )
    )


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _failure(future: asyncio.Future[Any]) -> BaseException:
    if future.cancelled():
        return SessionAbandonedError("send cancelled")
    error = future.exception()
    assert error is not None
    return error


__all__ = [
    "CONTENT_TYPE",
    "KafkaSink",
    "Producer",
    "ProducerFactory",
    "RecordBatch",
    "SessionAbandonedError",
    "aiokafka_producer",
]
