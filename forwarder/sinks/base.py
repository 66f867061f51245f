"""The sink interface: what every destination implements, and what it hands back.

The delivery worker alone calls ``start()`` once, then ``send()`` for each :class:`Batch`,
then ``close()``. ``send`` returns one :class:`~forwarder.sinks.outcome.Outcome` for
whatever the receiver answered; an exception out of ``start`` or ``send`` means only "no
answer", and the sink's pure ``classify`` maps it to an Outcome too. Sinks classify; they
never sleep, loop or retry: the worker owns retry, splitting, dead-letters and checkpoints
(Vector's model). A sink that cannot take concurrent sends says so in ``max_in_flight``.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, get_args

import msgspec

from forwarder.encoding.reference import Event, EventKind
from forwarder.errors import OutputClosedError
from forwarder.options import BatchConfig, StrictModel
from forwarder.sinks.outcome import Outcome, describe


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


class Sink(abc.ABC):
    """A destination for batches of events."""

    max_in_flight: ClassVar[int | None] = None
    """The most batches this sink may have in flight at once (None: what ``[batch]`` says)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:  # noqa: B027 - optional hook, most sinks need nothing
        """Connect or open; an exception here is classified and retried like a send."""

    @abc.abstractmethod
    async def send(self, batch: Batch) -> Outcome:
        """Deliver ``batch``; return what the receiver answered about it."""

    def classify(self, error: Exception) -> Outcome:
        """What an exception out of ``start``/``send`` (no answer) means: by default, retry."""
        return Outcome.unavailable(describe(error))

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""


async def outcome_of(sink: Sink, call: Awaitable[Outcome]) -> Outcome:
    """Await one ``start``/``send`` of ``sink``; no answer (an exception) becomes its Outcome.

    Only :class:`OutputClosedError` passes through: the output is gone and the forwarder stops.
    """
    try:
        return await call
    except OutputClosedError:
        raise
    except Exception as error:
        return sink.classify(error)


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink may know of the forwarder around it."""

    host: str
    state_dir: Path


class SinkConfigBase(StrictModel, tag_field="type", frozen=True, kw_only=True):
    """Options every ``[sinks.NAME]`` table has besides its own.

    Each sink type subclasses it with ``tag="<type>"``: the table's ``type`` key picks the
    class. ``batch`` overrides the top-level ``[batch]`` for this sink only. ``events`` lists
    the kinds the sink takes (default all) and ``kernel_event_classes`` narrows its kernel
    events to some classes; whatever it does not take still moves its checkpoint.
    """

    batch: BatchConfig | None = None
    events: tuple[EventKind, ...] = get_args(EventKind)
    kernel_event_classes: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] | None = None

    def __post_init__(self) -> None:
        """Checks across this table's options; each sink type's own call this first (super)."""
        if not self.events:
            raise ValueError(f"events must name at least one of {list(get_args(EventKind))}")
        if self.kernel_event_classes is not None and "kernel_event" not in self.events:
            raise ValueError("kernel_event_classes needs 'kernel_event' in events")

    def build(self, name: str, context: SinkContext) -> Sink:
        """Create the sink this table describes."""
        raise NotImplementedError
