"""A sink's event selection: what it does not take becomes a Position that still checkpoints."""

from __future__ import annotations

from forwarder.delivery.selection import EventSelection
from forwarder.encoding.reference import encode_gap
from forwarder.routing import Position
from tests.support.events import identity, make_events, make_kernel_event

WHO = identity()


def _stream():
    records = make_events(["a", "b"], who=WHO, first_seq=10)
    gap = encode_gap(
        host=WHO.host,
        boot_id=WHO.boot_id,
        first_seq=12,
        last_seq=13,
        reason="overwritten",
        timestamp_ns=WHO.clock_offset_ns,
        checkpoint_boot_id=WHO.boot_id,
        checkpoint_seq=13,
    )
    oom = make_kernel_event("oom_kill", 14, who=WHO, record_count=1)
    fault = make_kernel_event("user_fault", 15, who=WHO, record_count=1)
    return [*records, gap, oom, fault, Position(WHO.boot_id, 16)]


def test_the_default_selection_takes_everything_unchanged():
    """With no events option a sink gets every kind, and no pass over its items is needed."""
    selection = EventSelection.of(["kmsg", "gap", "kernel_event"], None)
    assert selection.takes_everything
    stream = _stream()
    assert selection.apply(stream) == stream


def test_a_kernel_event_class_selection_keeps_only_those_events_and_every_position():
    """Events = ["kernel_event"], classes = ["oom_kill"]: one event, Positions for the rest."""
    selection = EventSelection.of(["kernel_event"], ["oom_kill"])
    stream = _stream()
    selected = selection.apply(stream)
    assert [item for item in selected if not isinstance(item, Position)] == [stream[3]]
    assert [item.checkpoint_seq for item in selected] == [10, 11, 13, 14, 15, 16]


def test_a_sink_without_kernel_events_gets_records_and_gaps():
    """Events = ["kmsg", "gap"] leaves kernel events out, as Positions."""
    selected = EventSelection.of(["kmsg", "gap"], None).apply(_stream())
    kinds = [getattr(item, "kind", "position") for item in selected]
    assert kinds == ["kmsg", "kmsg", "gap", "position", "position", "position"]
