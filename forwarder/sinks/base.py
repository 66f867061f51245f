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
from bisect import bisect_right
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Annotated, ClassVar, get_args, overload

import msgspec

from forwarder.encoding.chunk import Slice
from forwarder.encoding.reference import Event, EventKind
from forwarder.errors import OutputClosedError
from forwarder.options import BatchConfig, StrictModel
from forwarder.sinks.outcome import Outcome, describe

Part = Event | Slice
"""A piece of a batch: a slice of a chunk's records, or one standalone event (a gap...)."""


class Batch:
    """Records for one send, in seq order (never empty), as slices of chunks and events.

    Fast accessors: :meth:`ndjson`, :meth:`lines`, and ``parts`` for the columns of each
    slice's chunk. ``events`` is the slow, compatible view: an :class:`Event` per position,
    built on access. An :class:`~forwarder.sinks.outcome.Outcome` names items by position.
    """

    __slots__ = ("_ends", "parts")

    def __init__(self, parts: Iterable[Part]) -> None:
        self.parts: tuple[Part, ...] = tuple(parts)
        self._ends = list(accumulate(1 if isinstance(p, Event) else len(p) for p in self.parts))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @property
    def events(self) -> BatchEvents:
        """Every position as an :class:`Event` (built on access: slow paths and tests)."""
        return BatchEvents(self)

    @property
    def first_id(self) -> str:
        """Id of the first event (idempotency keys)."""
        return self.event(0).id

    @property
    def last_id(self) -> str:
        """Id of the last event."""
        return self.event(len(self) - 1).id

    def event(self, index: int) -> Event:
        """The event at ``index`` (0 <= index < len)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        number = bisect_right(self._ends, index)
        part = self.parts[number]
        if isinstance(part, Event):
            return part
        offset = index - (self._ends[number - 1] if number else 0)
        return part.chunk.event(part.start + offset)

    def ndjson(self) -> bytes:
        """The whole batch as NDJSON, every line ending in a newline (one join)."""
        return b"".join(
            [p.json + b"\n" if isinstance(p, Event) else p.ndjson() for p in self.parts]
        )

    def lines(self) -> list[bytes]:
        """Each record's event JSON, in order."""
        lines: list[bytes] = []
        for part in self.parts:
            if isinstance(part, Event):
                lines.append(part.json)
            else:
                lines += part.lines()
        return lines

    def select(self, indices: Iterable[int]) -> Batch:
        """A batch of the items at ``indices`` (ascending): a retry, a half of a split."""
        parts: list[Part] = []
        ends = self._ends
        for index in indices:
            number = bisect_right(ends, index)
            part = self.parts[number]
            if isinstance(part, Event):
                parts.append(part)
                continue
            at = part.start + index - (ends[number - 1] if number else 0)
            last = parts[-1] if parts else None
            if isinstance(last, Slice) and last.chunk is part.chunk and last.stop == at:
                parts[-1] = Slice(part.chunk, last.start, at + 1)
            else:
                parts.append(Slice(part.chunk, at, at + 1))
        return Batch(parts)


class BatchEvents(Sequence[Event]):
    """A batch seen as a sequence of :class:`Event` (compatible, per-record, slow)."""

    __slots__ = ("_batch",)

    def __init__(self, batch: Batch) -> None:
        self._batch = batch

    def __len__(self) -> int:
        return len(self._batch)

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...
    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            return [self._batch.event(i) for i in range(len(self))[index]]
        return self._batch.event(index if index >= 0 else len(self) + index)

    def __iter__(self) -> Iterator[Event]:
        for part in self._batch.parts:
            if isinstance(part, Event):
                yield part
            else:
                for index in range(part.start, part.stop):
                    yield part.chunk.event(index)


class Sink(abc.ABC):
    """A destination for batches of events."""

    max_in_flight: ClassVar[int | None] = None
    """The most batches this sink may have in flight at once (None: what ``[batch]`` says)."""
    reads_lines_only: ClassVar[bool] = False
    """True when ``send`` reads a batch only as lines (``ndjson``, ``lines``, ``events``),
    never a slice's columns: its kernel events may then ride in its records' chunk."""

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
