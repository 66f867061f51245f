"""The sink interface: what every destination implements, and what it hands back.

A sink ``start()``s, ``send()``s one :class:`Batch` and returns only when the receiver
confirmed it (a :class:`SendResult` tells of items refused or to be sent again), or
raises a branch of :class:`forwarder.errors.SinkError`; then ``close()``. Sinks classify
failures; they never sleep, loop or retry: the pipeline owns retry, splitting,
dead-letters and checkpoints (Vector's model).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from forwarder.encode import Event
from forwarder.options import BatchConfig, StrictModel


@dataclass(frozen=True, slots=True)
class Batch:
    """Events for one send, in seq order (never empty)."""

    events: Sequence[Event]

    @property
    def first_id(self) -> str:
        """Id of the first event (idempotency keys)."""
        return self.events[0].id

    @property
    def last_id(self) -> str:
        """Id of the last event."""
        return self.events[-1].id


@dataclass(frozen=True, slots=True)
class Rejection:
    """One event the receiver permanently refused.

    ``reason`` is a short, low-cardinality class (a metric label, e.g. ``loki_400``);
    ``detail`` is the receiver's own words, kept in the dead-letter file and the log.
    """

    event: Event
    reason: str
    detail: str


@dataclass(slots=True)
class SendResult:
    """What the receiver said about a batch it answered.

    Everything not listed in ``rejected`` or ``retry`` was stored; ``duplicates`` counts
    events the receiver already had (e.g. Elasticsearch 409 on ``create``).
    """

    rejected: list[Rejection] = field(default_factory=list)
    retry: list[Event] = field(default_factory=list)
    retry_after_s: float | None = None
    duplicates: int = 0


class Sink(abc.ABC):
    """A destination for batches of events."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:  # noqa: B027 - optional hook, most sinks need nothing
        """Connect or open; raising a SinkError here is retried like a send."""

    @abc.abstractmethod
    async def send(self, batch: Batch) -> SendResult:
        """Deliver ``batch``; return once the receiver confirmed it."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink may know of the forwarder around it."""

    host: str
    state_dir: Path


class SinkConfigBase(StrictModel):
    """Options every ``[sinks.NAME]`` table has besides its own.

    ``batch`` overrides the top-level ``[batch]`` for this sink only.
    """

    batch: BatchConfig | None = None

    def build(self, name: str, context: SinkContext) -> Sink:
        """Create the sink this table describes."""
        raise NotImplementedError
