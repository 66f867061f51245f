"""Kernel events in the running forwarder: classify what the reader reads, route the events.

The reader hands each encoded :class:`~forwarder.encoding.chunk.Chunk` (and the raw
records it came from) to :meth:`KernelEventStage.route` instead of routing it itself.
The stage feeds the classifier every kern record read, in seq order, also the ones at
or below a sink's checkpoint (re-read from the ring after a restart: a report that
straddles a restart comes out once, whole). Only kern records are parsed (the chunk's
prefix column says which), unless a user rule asks for another facility.

An event goes into the stream right after the record that completed it, and carries
that record's seq as its checkpoint position; the batcher never separates the two
(``forwarder.delivery.batcher``). How it goes there (between slices, or as a row of a
merged chunk) is ``forwarder.kernel_events.placement``'s. A sink whose checkpoint stood
at or past that seq at start got the event before the restart and does not get it again.
A report closed by a flush (end of a dump, or 2 s of wall time with no record on a live
source) takes the position of the newest record read. At a stop, open reports are not
flushed: the next run re-reads their records from the ring and completes them.

Then each sink's :class:`EventSelection` turns what it does not take into Position markers.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence

from forwarder.delivery.selection import EventSelection
from forwarder.encoding.chunk import Chunk
from forwarder.encoding.reference import Event, Identity
from forwarder.kernel_events.catalogue import CLASSES, might_open_at
from forwarder.kernel_events.classifier import KernelEventClassifier
from forwarder.kernel_events.config import KernelEventsConfig
from forwarder.kernel_events.envelope import encode_kernel_event
from forwarder.kernel_events.model import KernelEvent
from forwarder.kernel_events.placement import (
    Group,
    MergedChunk,
    insert_after,
    one_slice,
    takes_merged,
)
from forwarder.kernel_events.records import aligned_raws, kern_openers, parse_for_classification
from forwarder.kernel_events.rules import UserRule
from forwarder.routing import Gap, Item, Router
from forwarder.telemetry.events import Emitter

IDLE_CHECK_S = 0.25
_KERN_PREFIXES = 8  # prefix = facility << 3 | level: kern is 0..7

Out = dict[str, list[Item]]
Put = Callable[[Out], Awaitable[None]]


class KernelEventStage:
    """Owns the classifier of the running forwarder and the sinks' event selections.

    ``resume`` is each sink's checkpoint seq in this boot at start (-1 for a checkpoint
    of another boot, None for none); ``lines_only`` names the sinks that read batches as
    lines only (``Sink.reads_lines_only``). ``spooled_through`` names the sinks that start
    behind the spool, with its newest seq of this boot: their events completed by a record
    up to it come from their spool catch-up (``forwarder.spool.lagging_events``), a report
    still open there is this stage's (a flush at that seq included).
    """

    def __init__(
        self,
        config: KernelEventsConfig,
        identity: Identity,
        resume: Mapping[str, int | None],
        selections: Mapping[str, EventSelection],
        emit: Emitter,
        *,
        lines_only: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
        spooled_through: Mapping[str, int] | None = None,
        count: bool = True,
    ) -> None:
        self._config = config
        self._all_selections = dict(selections)
        self._lines_only = frozenset(lines_only)
        self._resume = dict(resume)
        self._flush_resume = dict(resume)  # a flush's events go where position > this
        for sink, tail in (spooled_through or {}).items():
            seq = self._resume.get(sink)
            self._resume[sink] = tail if seq is None else max(tail, seq)
            self._flush_resume[sink] = tail - 1 if seq is None else max(tail - 1, seq)
        positions = [seq for seq in self._resume.values() if seq is not None]
        # An event at or below every sink's checkpoint was made (and counted) before a restart;
        # so was every event a catch-up makes again from the spool (``count`` False).
        self._counted_above = min(positions) if len(positions) == len(resume) else None
        self._selections = {
            sink: selection
            for sink, selection in selections.items()
            if not selection.takes_everything
        }
        # Sinks that may take a read's events inside its chunk (see MergedChunk).
        self._merging = frozenset(lines_only) - set(self._selections)
        self._emit_event = emit
        self._counting = count and emit.metrics is not None  # without metrics: a no-op
        self._clock = clock
        self._classifier: KernelEventClassifier | None = None
        self._every_facility = False
        self._rules: tuple[UserRule, ...] = ()
        self._idle_flush_s = config.idle_flush_s
        if config.enabled:
            self._rules = rules = config.compiled_rules()
            self._classifier = KernelEventClassifier(
                host=identity.host,
                boot_id=identity.boot_id,
                clock_offset_ns=identity.clock_offset_ns,
                disabled_classes=config.disabled_classes,
                rules=rules,
                clock=clock,
            )
            self._every_facility = any(rule.facility_code != 0 for rule in rules)
        self._last_seq = -1
        self._fed_seq = -1
        self._lock = asyncio.Lock()
        self._closed = False
        self._last_handout = clock()

    @property
    def enabled(self) -> bool:
        """Whether kernel events are classified at all."""
        return self._classifier is not None

    def for_sink(
        self, sink: str, identity: Identity, resume: int | None
    ) -> KernelEventStage | None:
        """A stage of its own for one sink reading other records (a spool catch-up).

        ``resume``: the sink's seq in ``identity``'s boot (None: it has none); None when
        kernel events are off.
        """
        if self._classifier is None:
            return None
        selection = self._all_selections.get(sink)
        return KernelEventStage(
            self._config,
            identity,
            {sink: resume},
            {} if selection is None else {sink: selection},
            self._emit_event,
            lines_only=self._lines_only & {sink},
            clock=self._clock,
            count=False,
        )

    def flush(self, out: Out) -> None:
        """Close every open report now (its records' boot ended), at the newest position."""
        self._close_open_reports(out)
        self._apply_selections(out)

    def select(self, sink: str, items: Sequence[Item]) -> Sequence[Item]:
        """``items`` as ``sink`` takes them (unchanged unless it narrowed its events)."""
        selection = self._selections.get(sink)
        return items if selection is None else selection.apply(items)

    def route(
        self, chunk: Chunk, raws: Sequence[bytes], router: Router, out: Out, *, end: bool
    ) -> list[Gap]:
        """Route ``chunk`` with its kernel events into ``out``; ``end``: the source ended."""
        gaps: list[Gap] = []
        if self._classifier is None:
            gaps = router.route_chunk(chunk, out)
        else:
            completed = self._classify(chunk, raws)
            starts = {sink: len(items) for sink, items in out.items()}
            gaps = router.route_chunk(chunk, out)
            if completed:
                self._place(chunk, completed, out, starts)
        if len(chunk):
            self._last_seq = max(self._last_seq, chunk.seqs[-1])
        if end:
            self._close_open_reports(out)
        self._apply_selections(out)
        return gaps

    def _close_open_reports(self, out: Out) -> None:
        """Every open report's event, at the newest position (the end of the records)."""
        if self._classifier is None:
            return
        try:
            self._emit(self._classifier.flush(), self._last_seq, out)
        except Exception as error:  # the safety net, as for a record
            self._failed(error, self._last_seq)

    def _apply_selections(self, out: Out) -> None:
        """Each sink's items as it takes them (only sinks that narrowed their events)."""
        for sink, selection in self._selections.items():
            out[sink] = selection.apply(out[sink])

    @contextlib.asynccontextmanager
    async def handing_out(self) -> AsyncIterator[None]:
        """Hold while routing and queueing one read: the idle flush never cuts in."""
        async with self._lock:
            try:
                yield
            finally:
                self._last_handout = self._clock()

    async def flush_when_idle(self, put: Put, sinks: Sequence[str]) -> None:
        """Forever: after ``idle_flush_s`` with no record read, close open reports, queue them."""
        classifier = self._classifier
        if classifier is None:
            return
        while not self._closed:
            await asyncio.sleep(IDLE_CHECK_S)
            if not classifier.open_reports or not self._idle():
                continue
            async with self._lock:
                if self._closed or not self._idle():
                    continue
                out: Out = {sink: [] for sink in sinks}
                try:
                    self._emit(classifier.flush_idle(self._clock()), self._last_seq, out)
                except Exception as error:  # the safety net, as for a record
                    self._failed(error, self._last_seq)
                    continue
                self._apply_selections(out)
                await put(out)

    async def close(self) -> None:
        """The reader is done: nothing more may be queued (the sinks' streams end)."""
        async with self._lock:
            self._closed = True

    def _failed(self, error: Exception, seq: int) -> None:
        self._emit_event.kernel_event_failed(seq, repr(error))

    def _idle(self) -> bool:
        return self._clock() - self._last_handout >= self._idle_flush_s

    def _time_passes(
        self, chunk: Chunk, lo: int, hi: int, completed: list[tuple[int, list[KernelEvent]]]
    ) -> None:
        """Close open reports at the first record of ``lo:hi`` past their quiet window.

        These records are not fed (another facility), yet their ``ts_usec`` moves time on: a
        report waiting for optional trailing lines closes though user records keep the device
        from ever going idle. It closes at the first record past its window, wherever the
        reads were cut, so its position is the same in every run over the same records (a
        restart, a spool catch-up): a position that moved with the reads could make a sink
        skip the event after a restart, or get it twice.
        """
        classifier = self._classifier
        assert classifier is not None
        stamps, seqs = chunk.ts_usec, chunk.seqs
        while lo < hi and classifier.open_reports:
            # ts_usec only grows within a boot: the first record past the deadline, in C.
            at = bisect.bisect_right(stamps, classifier.quiet_deadline_usec(), lo, hi)
            if at >= hi:
                return
            try:
                events = classifier.advance(seqs[at], stamps[at])
            except Exception as error:  # the safety net, as for a record
                self._failed(error, seqs[at])
                return
            if events:
                completed.append((at, events))
            lo = at + 1

    def _classify(self, chunk: Chunk, raws: Sequence[bytes]) -> list[tuple[int, list[KernelEvent]]]:
        """(index in ``chunk``, events its record completed), for the records that closed any.

        Kern records only (every record when a user rule takes another facility). While no
        report is open, only records that might open one are parsed and fed: the others
        change nothing (:func:`might_open_at` finds them in the whole window at once). While
        reports are open, such a record that none of them could take is not parsed either
        (:meth:`KernelEventClassifier.pass_over`).
        """
        classifier = self._classifier
        assert classifier is not None
        completed: list[tuple[int, list[KernelEvent]]] = []
        if self._every_facility:
            wanted = list(range(len(chunk)))
        else:
            wanted = [i for i, prefix in enumerate(chunk.prefixes) if prefix < _KERN_PREFIXES]
        if not wanted:
            self._time_passes(chunk, 0, len(chunk), completed)
            return completed
        window = raws if len(raws) == len(chunk) else aligned_raws(chunk, raws)
        may_open = None if self._rules else might_open_at(window)
        openers = None if may_open is None else kern_openers(may_open, wanted)
        seqs, count, position, next_opener = chunk.seqs, len(wanted), 0, 0
        stamps = chunk.ts_usec
        seen = -1  # the last index handled: the records between two kern ones move time on
        while position < count:
            if openers is not None and not classifier.open_reports:
                while next_opener < len(openers) and openers[next_opener] < wanted[position]:
                    next_opener += 1
                if next_opener == len(openers):
                    break
                position = bisect.bisect_left(wanted, openers[next_opener], position)
            index = wanted[position]
            position += 1
            if index > seen + 1 and classifier.open_reports:
                self._time_passes(chunk, seen + 1, index, completed)
            seen = index
            seq = seqs[index]
            if seq <= self._fed_seq:
                continue  # a dump may repeat records; the sinks skip them too
            self._fed_seq = seq
            raw = window[index]
            if (
                may_open is not None
                and index not in may_open
                and raw
                and classifier.pass_over(raw, seq, stamps[index])
            ):
                continue  # no open report could take it: it only counts as their idle record
            if events := self._feed(raw, chunk.prefixes[index], seq, stamps[index]):
                completed.append((index, events))
        self._fed_seq = max(self._fed_seq, seqs[wanted[-1]])
        self._time_passes(chunk, seen + 1, len(chunk), completed)
        return completed

    def _feed(self, raw: bytes, prefix: int, seq: int, ts_usec: int) -> list[KernelEvent]:
        """The events one record closed (none for a record the parser refused)."""
        assert self._classifier is not None
        record = parse_for_classification(raw, prefix, seq, ts_usec)
        if record is None:
            return []
        try:
            return self._classifier.feed(record)
        except Exception as error:  # the safety net: a classifier bug never stops the reader
            self._failed(error, seq)
            return []

    def _emit(self, events: list[KernelEvent], position: int, out: Out) -> None:
        """Queue ``events`` at the end, at ``position``, for every sink that did not get them."""
        encoded, position = self._encode(events, position)
        for sink, resume in self._flush_resume.items():
            if resume is None or position > resume:
                out[sink].extend(encoded)

    def _place(
        self,
        chunk: Chunk,
        completed: list[tuple[int, list[KernelEvent]]],
        out: Out,
        starts: Mapping[str, int],
    ) -> None:
        """Put each group of events right after its record, for each sink that did not get it.

        ``starts`` says where this read's items begin in each sink's list.

        A sink that reads lines only and takes this read as one slice gets the slice of a
        :class:`MergedChunk` (built once for all of them); the others get the events
        inserted between their items, latest group first (positions never decrease along a
        stream: each insertion leaves the places of the earlier ones as they were).
        """
        groups: list[Group] = []
        positions: list[int] = []
        for index, events in completed:
            encoded, position = self._encode(events, chunk.seqs[index])
            groups.append((index, encoded))
            positions.append(position)
        merged: MergedChunk | None = None
        for sink, resume in self._resume.items():
            owed = [
                at for at, position in enumerate(positions) if resume is None or position > resume
            ]
            if not owed:
                continue
            items, lo = out[sink], starts[sink]
            part = one_slice(items[lo:], chunk) if sink in self._merging else None
            if part is not None and takes_merged(part, chunk, groups, [groups[at] for at in owed]):
                merged = merged or MergedChunk(chunk, groups)
                items[lo:] = [merged.slice(part)]
                continue
            for at in reversed(owed):
                insert_after(items, positions[at], groups[at][1], lo=lo)

    def _encode(self, events: list[KernelEvent], position: int) -> tuple[list[Event], int]:
        """The events' Events (each at the newest position so far) and the group's position.

        Each is counted unless every sink could have had it before a restart.
        """
        encoded = []
        for kernel_event in events:
            position = max(position, kernel_event.completed_by_seq)
            encoded.append(encode_kernel_event(kernel_event, position))
            if self._counting and (self._counted_above is None or position > self._counted_above):
                self._count(kernel_event)
        return encoded, position

    def _count(self, event: KernelEvent) -> None:
        builtin = event.class_name in CLASSES
        kind = event.fields.get("kind") if builtin else None
        severity = event.fields.get("severity") if event.class_name == "hw_error" else None
        self._emit_event.kernel_event(
            event.class_name,
            kind if isinstance(kind, str) else "",
            severity if isinstance(severity, str) else "",
        )
