"""Where kernel events go in a sink's items: right after the record that completed them.

Two ways give the same stream. :func:`insert_after` puts a group of events between the
items, cutting the slice that holds their record in two (any sink, any items). For a read
whose events sit inside the one slice a sink takes, :class:`MergedChunk` instead writes
the events as rows of a copy of the chunk, right after their record's row, so the sink
gets one slice, not one per event, and the batcher and the sink handle a few items per
read. Only a sink that reads a batch as lines (``Sink.reads_lines_only``) gets merged
chunks: the columns of an event's row are those of its record.

Groups are placed latest first, so at one record a later group comes before an earlier
one (a report closed by time at a record, then the record's own events); the merged rows keep
that order. A property test pins the two ways together.
"""

from __future__ import annotations

import bisect
import operator
from array import array
from collections.abc import Sequence
from dataclasses import replace
from itertools import accumulate, chain, count, repeat
from operator import add

from forwarder.encoding.chunk import Chunk, Slice
from forwarder.encoding.reference import Event
from forwarder.routing import Item

_position = operator.attrgetter("checkpoint_seq")
# Merging copies every row of the read (~1 us each here); inserting costs ~15 us an event
# down to the sink: merge when a read has at least one event per this many records.
MERGE_RECORDS_PER_EVENT = 8

Group = tuple[int, list[Event]]
"""The index in the chunk of the record that completed some events, and the events."""


def insert_after(items: list[Item], position: int, events: list[Event], *, lo: int) -> None:
    """Put ``events`` right after the record at ``position`` in ``items`` (from ``lo`` on).

    Positions never decrease along a stream: the events go before the first item past
    ``position``; a slice that holds ``position`` and later records is cut in two around them.
    """
    at = bisect.bisect_right(items, position, lo=lo, key=_position)
    if at < len(items):
        item = items[at]
        if isinstance(item, Slice):
            cut = bisect.bisect_right(item.chunk.seqs, position, item.start, item.stop) - item.start
            if cut > 0:
                items[at : at + 1] = [item.part(0, cut), *events, item.part(cut, len(item))]
                return
    items[at:at] = events


class MergedChunk:
    """A chunk with its read's kernel events as rows after their records' (built once)."""

    def __init__(self, chunk: Chunk, groups: Sequence[Group]) -> None:
        indices = [index for index, _ in groups]
        ordered = groups
        if not all(map(operator.lt, indices, indices[1:])):
            # By record, the latest group first at a tie, as insert_after leaves them.
            ordered = [group for _, group in sorted(enumerate(groups), key=_by_record_latest_first)]
            indices = [index for index, _ in ordered]
        self.chunk = _merged(chunk, ordered)
        self._indices = indices
        # Events in the groups before each group.
        self._before = [0, *accumulate(map(len, map(operator.itemgetter(1), ordered)))]

    def slice(self, part: Slice) -> Slice:
        """``part`` (records of the original chunk) with the events of its records."""
        return Slice(
            self.chunk, part.start + self._rows(part.start), part.stop + self._rows(part.stop)
        )

    def _rows(self, index: int) -> int:
        """Event rows before record ``index``'s row."""
        return self._before[bisect.bisect_left(self._indices, index)]


def _by_record_latest_first(numbered: tuple[int, Group]) -> tuple[int, int]:
    return numbered[1][0], -numbered[0]


def one_slice(items: Sequence[Item], chunk: Chunk) -> Slice | None:
    """The records of ``items`` as one slice, if they are touching slices of ``chunk``."""
    if not items:
        return None
    start = stop = items[0].start if isinstance(items[0], Slice) else -1
    for item in items:
        if not isinstance(item, Slice) or item.chunk is not chunk or item.start != stop:
            return None
        stop = item.stop
    return Slice(chunk, start, stop)


def takes_merged(part: Slice, chunk: Chunk, groups: Sequence[Group], owed: Sequence[Group]) -> bool:
    """Whether the groups a sink is owed (``owed``) are those of the records in ``part``.

    ``part`` is all the sink takes of this read; if so, and its events are not too few to
    pay for the copy, it takes a merged slice instead.

    Every event must sit at its record's seq (its position), so the rows keep seq order.
    """
    start, stop, seqs = part.start, part.stop, chunk.seqs
    if sum(len(events) for _, events in owed) * MERGE_RECORDS_PER_EVENT < stop - start:
        return False  # inserting the few events costs less than copying the read
    if not all(start <= index < stop for index, _ in owed):
        return False
    inside = 0
    for index, events in groups:
        inside += start <= index < stop
        if any(event.checkpoint_seq != seqs[index] for event in events):
            return False
    return inside == len(owed)


def _merged(chunk: Chunk, ordered: Sequence[Group]) -> Chunk:
    """The rows of ``chunk`` with each group's events after its record's row.

    Every column is built in C loops: an event row repeats its record's seq, prefix and
    time; the line ends are counted again from the merged NDJSON (no JSON holds a newline).
    """
    view = memoryview(chunk.data)
    old_ends = chunk.ends
    pieces: list[bytes | memoryview] = []
    rows_of = [1] * len(chunk)  # rows per record: itself and the events after it
    events: dict[int, Event] = {}
    offset = 0  # bytes of chunk.data copied
    add_piece = pieces.append
    for index, group in ordered:
        end = old_ends[index]
        add_piece(view[offset:end])
        offset = end
        row = index + len(events)  # the record's row: events placed so far are all before it
        for event in group:
            row += 1
            events[row] = event
            add_piece(event.json)
            add_piece(b"\n")
        rows_of[index] += len(group)
    pieces.append(view[offset:])
    data = b"".join(pieces)
    lines = data.split(b"\n")
    lines.pop()  # after the last newline
    return replace(
        chunk,
        data=data,
        ends=array("Q", map(add, accumulate(map(len, lines)), count(1))),
        seqs=array("Q", chain.from_iterable(map(repeat, chunk.seqs, rows_of))),
        prefixes=list(chain.from_iterable(map(repeat, chunk.prefixes, rows_of))),
        ts_usec=array("Q", chain.from_iterable(map(repeat, chunk.ts_usec, rows_of))),
        events=events,
    )
