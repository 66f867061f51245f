"""Which events a sink takes: its ``events`` kinds and ``kernel_event_classes``.

An event a sink does not take still moves its checkpoint, like a record below
``min_level``: it becomes a :class:`~forwarder.routing.Position` marker, so a sink that
takes only ``kernel_event`` (an alerting webhook) still checkpoints every record it skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from forwarder.encoding.chunk import Slice
from forwarder.encoding.reference import Event, EventKind
from forwarder.kernel_events.envelope import class_of
from forwarder.routing import Item, Position

EVENT_KINDS: Final[tuple[EventKind, ...]] = ("kmsg", "gap", "kernel_event")


@dataclass(frozen=True, slots=True)
class EventSelection:
    """The kinds a sink takes and, for kernel events, the classes (None: every class)."""

    kinds: frozenset[str] = frozenset(EVENT_KINDS)
    classes: frozenset[str] | None = None

    @classmethod
    def of(cls, kinds: Iterable[str], classes: Iterable[str] | None) -> EventSelection:
        """The selection of a sink's options."""
        return cls(frozenset(kinds), None if classes is None else frozenset(classes))

    @property
    def takes_everything(self) -> bool:
        """Whether nothing is ever left out (the default: no pass over the items at all)."""
        return self.kinds >= set(EVENT_KINDS) and self.classes is None

    def takes(self, event: Event) -> bool:
        """Whether the sink gets ``event``."""
        if event.kind not in self.kinds:
            return False
        if event.kind != "kernel_event" or self.classes is None:
            return True
        return class_of(event) in self.classes

    def apply(self, items: Sequence[Item]) -> list[Item]:
        """``items`` with every event the sink does not take turned into a Position marker.

        A slice holds kmsg records only: a sink without ``kmsg`` gets a marker per record.
        """
        selected: list[Item] = []
        takes_records = "kmsg" in self.kinds
        for item in items:
            if isinstance(item, Slice):
                if takes_records:
                    selected.append(item)
                else:
                    boot_id = item.boot_id
                    selected.extend(
                        Position(boot_id, seq) for seq in item.chunk.seqs[item.start : item.stop]
                    )
            elif isinstance(item, Event) and not self.takes(item):
                selected.append(Position(item.boot_id, item.checkpoint_seq))
            else:
                selected.append(item)
        return selected
