"""The ``kafka`` sink: one Kafka message per event, produced with aiokafka.

The events of a batch are appended to aiokafka record batches (``create_batch``, at most
``max_batch_bytes`` each, compressed per record batch) and each is queued whole with
``send_batch``: per record only the append runs in Python, not ``send``'s per-message
checks and partitioning. All of a sink's messages have one key, so the partition is the
one ``send`` would hash that key to, computed once per producer session.

A batch is acknowledged only when the future of every one of its record batches resolved
(the broker acknowledged with ``acks``), so the pipeline never checkpoints what the broker
does not have. Failures are classified, never retried here (Vector's model):

- connection problems, timeouts and ``KafkaError.retriable`` -> RetryableSinkError;
- unknown topic, authorization and authentication -> SinkConfigError (retried, not ready);
- a record larger than ``max_request_bytes`` -> a Rejection (dead-lettered); the broker
  refusing a multi-record batch for its size -> BatchTooLargeError (the pipeline splits);
- any other permanent broker answer -> SinkConfigError: a broker that refuses us for a
  reason we do not know must be looked at, not fed our records into a dead-letter file.

After a failed attempt the producer session is abandoned (its queued messages are failed,
not delivered later) and the next ``send`` starts a fresh one, so a retried batch is not
also sitting in the old producer's queue: retries add no duplicates beyond the requests
that were already on the wire. The producer comes from a factory (a seam for tests).

Configuration and validation: :mod:`forwarder.sinks.kafka`.
Producer API: https://aiokafka.readthedocs.io/en/stable/api.html#producer-class
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from forwarder.encode import Event
from forwarder.errors import (
    BatchTooLargeError,
    RetryableSinkError,
    SinkConfigError,
    SinkError,
)
from forwarder.sinks.base import Batch, Rejection, SendResult, Sink

if TYPE_CHECKING:
    # Annotation only: the config module imports this one to build the sink.
    from forwarder.sinks.kafka import KafkaSinkConfig

CONTENT_TYPE = b"application/json"
# The name the sink logged under before the split; log filters keep matching.
_log = structlog.get_logger("forwarder.sinks.kafka")
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
# The events of one queued record batch and the future of its acknowledgement.
_Sent = tuple[Sequence[Event], "asyncio.Future[Any]"]


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
        """Connect and check that the topic exists; raise RetryableSinkError while unreachable."""
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
            except BaseException as error:
                self._abandon(producer, [])
                if isinstance(error, TimeoutError):
                    raise RetryableSinkError(
                        f"kafka {','.join(self._config.bootstrap_servers)}: no answer within"
                        f" delivery_timeout_ms={self._config.delivery_timeout_ms} at connect"
                    ) from error
                if isinstance(error, Exception):
                    raise self._classify(error) from error
                raise
            self._producer = producer
            self._partition = _partition_for(self._key, partitions)

    async def send(self, batch: Batch) -> SendResult:
        """Produce the batch; return once the broker acknowledged every message of it."""
        if self._producer is None:
            await self.start()
        producer = self._producer
        assert producer is not None
        rejected: list[Rejection] = []
        sent: list[_Sent] = []
        try:
            async with asyncio.timeout(self._delivery_timeout_s):
                await self._produce(producer, batch.events, sent, rejected)
                if sent:
                    await asyncio.wait([future for _, future in sent])
        except TimeoutError as error:
            self._drop(producer, sent)
            acked = sum(len(events) for events, future in sent if _succeeded(future))
            raise RetryableSinkError(
                f"{len(batch.events) - acked} of {len(batch.events)} records not acknowledged"
                f" within delivery_timeout_ms={self._config.delivery_timeout_ms}"
            ) from error
        except Exception as error:
            self._drop(producer, sent)
            raise self._classify(error) from error
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
        events: Sequence[Event],
        sent: list[_Sent],
        rejected: list[Rejection],
    ) -> None:
        """Append the events to record batches, queueing each as it fills; list them in ``sent``."""
        key = self._key
        builder: RecordBatch | None = None
        first = 0  # index of the builder's first event
        for index, event in enumerate(events):
            value, headers = event.json, self._headers(event)
            if builder is not None:
                added = builder.append(timestamp=None, key=key, value=value, headers=headers)
                if added is not None:
                    continue
                # Full: queue it; this record opens the next one.
                sent.append((events[first:index], await self._queue(producer, builder)))
                builder = None
            # An empty record batch takes a record of any size: check it as send() would.
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
            if size > self._max_request_bytes:
                rejected.append(Rejection(event, "kafka_record_too_large", _too_large(size)))
                continue
            builder = producer.create_batch()
            builder.append(timestamp=None, key=key, value=value, headers=headers)
            first = index
        if builder is not None:
            sent.append((events[first:], await self._queue(producer, builder)))

    async def _queue(self, producer: Producer, builder: RecordBatch) -> asyncio.Future[Any]:
        return await producer.send_batch(builder, self._topic, partition=self._partition)

    def _result(
        self,
        producer: Producer,
        batch: Batch,
        sent: list[_Sent],
        rejected: list[Rejection],
    ) -> SendResult:
        failures = [(events, _failure(future)) for events, future in sent if not _succeeded(future)]
        if not failures:
            return SendResult(rejected=rejected)
        for events, error in failures:
            if isinstance(error, _SIZE_ERRORS):
                if len(batch.events) > 1:
                    raise BatchTooLargeError(f"the broker refused a message set: {error}")
                rejected.extend(Rejection(e, "kafka_record_too_large", str(error)) for e in events)
        remaining = [error for _, error in failures if not isinstance(error, _SIZE_ERRORS)]
        if not remaining:
            return SendResult(rejected=rejected)
        self._drop(producer, sent)
        classified = [self._classify(error) for error in remaining]
        # A configuration problem is the one a person must see on /readyz first.
        raise next((e for e in classified if isinstance(e, SinkConfigError)), classified[0])

    def _headers(self, event: Event) -> list[tuple[str, bytes]]:
        headers: list[tuple[str, bytes]] = []
        for name in self._header_names:
            if name == "content-type":
                headers.append((name, CONTENT_TYPE))
            else:
                value = event.fields.get(name)
                if value is not None:
                    headers.append((name, str(value).encode()))
        return headers

    def _classify(self, error: BaseException) -> SinkError:
        """Map an aiokafka (or socket) failure onto the error tree."""
        if isinstance(error, SinkError):
            return error
        where = f"kafka {','.join(self._config.bootstrap_servers)} topic {self._topic!r}"
        if isinstance(error, kafka_errors.UnknownTopicOrPartitionError):
            return SinkConfigError(f"{where}: the topic does not exist (or is not visible to us)")
        hint = ""
        if self._config.enable_idempotence and isinstance(error, _IDEMPOTENCE_SUSPECTS):
            hint = " (a broker without idempotent producing needs enable_idempotence = false)"
        if isinstance(error, _CONFIG_ERRORS):
            return SinkConfigError(f"{where}: refused: {_describe(error)}{hint}")
        # ProducerClosed: another batch's failure abandoned the session this one was using.
        transient = OSError | kafka_errors.KafkaTimeoutError | kafka_errors.ProducerClosed
        if isinstance(error, transient) or (
            isinstance(error, kafka_errors.KafkaError) and error.retriable
        ):
            return RetryableSinkError(f"{where}: {_describe(error)}")
        return SinkConfigError(f"{where}: unexpected broker answer: {_describe(error)}{hint}")

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
        _log.warning("kafka_producer_stop_failed", error=_describe(error))
    for future in futures:
        if future.done() and not future.cancelled():
            future.exception()  # mark retrieved: asyncio would log each one


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


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


__all__ = [
    "CONTENT_TYPE",
    "KafkaSink",
    "Producer",
    "ProducerFactory",
    "RecordBatch",
    "SessionAbandonedError",
    "aiokafka_producer",
]
