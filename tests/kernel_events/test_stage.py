"""The stage: kernel events enter each sink's stream right after the record that completed them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.delivery.selection import EventSelection
from forwarder.encoding.chunk import ChunkEncoder, Slice
from forwarder.encoding.reference import Event, Identity
from forwarder.kernel_events.config import KernelEventsConfig
from forwarder.kernel_events.stage import KernelEventStage
from forwarder.routing import Item, Position, Router
from forwarder.sinks.base import Batch
from forwarder.telemetry.events import Emitter
from forwarder.telemetry.metrics import Metrics

BOOT = "5b1e7c1a-2f4d-4c1e-9a7b-3d2e1f0a9b8c"
IDENTITY = Identity("node-1", BOOT, 1_790_000_000_000_000_000)
SEGFAULT = [
    (
        "6,{seq},{ts},-;memhog[4242]: segfault at 0 ip 000055d0c3a1b1c4 sp 00007ffd4c1e5e30 "
        "error 6 in memhog[55d0c3a1b000+1000] likely on CPU 1 (core 1, socket 0)"
    ),
    "6,{seq},{ts},-;Code: 00 00 00 48 89 e5 c7 00 2a 00 00 00 <c7> 00 00 00 00 00 5d c3",
]
WARNING_START = [
    "4,{seq},{ts},-;------------[ cut here ]------------",
    "4,{seq},{ts},-;WARNING: CPU: 0 PID: 1 at kernel/foo.c:10 foo_func+0x1/0x2",
]


def _raws(templates: list[str], first_seq: int, *, ts_usec: int = 1_000_000) -> list[bytes]:
    return [
        (template.format(seq=first_seq + i, ts=ts_usec + i) + "\n").encode()
        for i, template in enumerate(templates)
    ]


def _noise(first_seq: int, count: int) -> list[bytes]:
    return [f"6,{first_seq + i},{2_000_000 + i},-;eth0: noise {i}\n".encode() for i in range(count)]


class Harness:
    """A router and a stage over the same checkpoints, routing raw records like the reader."""

    def __init__(
        self,
        checkpoints: dict[str, Checkpoint | None],
        selections: dict[str, EventSelection] | None = None,
        *,
        lines_only: tuple[str, ...] = (),
        **config: Any,
    ) -> None:
        self.metrics = Metrics()
        self.router = Router(IDENTITY, checkpoints, min_level=7, now_ns=time.time_ns)
        resume = {
            name: None if c is None else c.seq if c.boot_id == BOOT else -1
            for name, c in checkpoints.items()
        }
        self.now = 0.0
        self.stage = KernelEventStage(
            KernelEventsConfig(**config),
            IDENTITY,
            resume,
            selections or {},
            Emitter(self.metrics),
            lines_only=lines_only,
            clock=lambda: self.now,
        )
        self.encoder = ChunkEncoder(IDENTITY)
        self.sinks = list(checkpoints)

    def route(self, raws: list[bytes], *, end: bool = False) -> dict[str, list[Item]]:
        """Encode and route ``raws`` as one read; what each sink got."""
        out: dict[str, list[Item]] = {name: [] for name in self.sinks}
        chunk = self.encoder.encode(raws, _unexpected, _unexpected)
        self.stage.route(chunk, raws, self.router, out, end=end)
        return out

    def counted(self, class_name: str, kind: str = "") -> float:
        """kmsg_forwarder_kernel_events_total of one class and kind."""
        value = self.metrics.registry.get_sample_value(
            "kmsg_forwarder_kernel_events_total",
            {"class": class_name, "kind": kind, "severity": ""},
        )
        return value or 0.0


def _unexpected(*args: object) -> None:
    raise AssertionError(f"bad record in a test: {args}")


def _expanded(items: list[Item]) -> list[Event | Position]:
    """The items with each slice of records as one Event per record."""
    expanded: list[Event | Position] = []
    for item in items:
        if isinstance(item, Slice):
            expanded.extend(Batch([item]).events)
        else:
            expanded.append(item)
    return expanded


def _described(items: list[Item]) -> list[tuple[str, int]]:
    return [
        (item.kind if isinstance(item, Event) else "position", item.checkpoint_seq)
        for item in _expanded(items)
    ]


def test_an_event_follows_the_record_that_completed_it_with_that_records_position() -> None:
    """The segfault event comes right after its Code line, at that line's seq, for every sink."""
    harness = Harness({"a": None, "b": None})
    out = harness.route(_noise(1, 2) + _raws(SEGFAULT, 3) + _noise(5, 2))
    for items in out.values():
        assert _described(items) == [
            ("kmsg", 1), ("kmsg", 2), ("kmsg", 3), ("kmsg", 4),
            ("kernel_event", 4), ("kmsg", 5), ("kmsg", 6),
        ]  # fmt: skip
    event = _expanded(out["a"])[4]
    assert isinstance(event, Event)
    assert event.id == f"{BOOT}-3-user_fault"
    assert harness.counted("user_fault", "segfault") == 1


def test_a_sink_whose_checkpoint_is_at_the_position_does_not_get_the_event_again() -> None:
    """Re-read after a restart: only the sink whose checkpoint is below the position gets it."""
    harness = Harness({"behind": Checkpoint(BOOT, 3, 0), "done": Checkpoint(BOOT, 4, 0)})
    out = harness.route(_raws(SEGFAULT, 3) + _noise(5, 1))
    assert _described(out["behind"]) == [("kmsg", 4), ("kernel_event", 4), ("kmsg", 5)]
    assert _described(out["done"]) == [("kmsg", 5)]
    assert harness.counted("user_fault", "segfault") == 1


def test_an_event_every_sink_had_before_the_restart_is_not_counted_again() -> None:
    """The metric counts an event once across restarts: not when every sink is past it."""
    harness = Harness({"a": Checkpoint(BOOT, 10, 0)})
    out = harness.route(_raws(SEGFAULT, 3) + _noise(5, 6))
    assert _described(out["a"]) == []
    assert harness.counted("user_fault", "segfault") == 0


def test_the_end_of_a_dump_flushes_an_open_report_at_the_newest_position() -> None:
    """A report still open at the end comes out incomplete, after the last record read."""
    harness = Harness({"a": None})
    harness.route(_raws(WARNING_START, 1))
    out = harness.route(_noise(3, 2), end=True)
    assert _described(out["a"]) == [("kmsg", 3), ("kmsg", 4), ("kernel_event", 4)]
    event = _expanded(out["a"])[-1]
    assert isinstance(event, Event)
    assert event.fields["complete"] is False
    assert event.fields["first_seq"] == 1


def _user(first_seq: int, count: int, ts_usec: int) -> list[bytes]:
    """User records (what a chatty daemon writes to /dev/kmsg) from ``ts_usec`` on."""
    return [f"14,{first_seq + i},{ts_usec + i},-;daemon: tick {i}\n".encode() for i in range(count)]


def test_user_records_2s_after_a_report_close_it_at_the_first_of_them() -> None:
    """Only kern records are fed, yet user records 2 s later end the report, at the first.

    A live device that never goes idle (user space writing every few ms) would otherwise
    hold an OOM report open after its Killed line until the next kern record. The event
    comes after the first record past the quiet window, wherever the reads were cut: the
    same position in every run (a restart, a spool catch-up).
    """
    harness = Harness({"a": None})
    harness.route(_raws(WARNING_START, 1))  # open: no end trace yet
    assert _described(harness.route(_user(3, 2, 1_500_000))["a"]) == [("kmsg", 3), ("kmsg", 4)]
    out = harness.route(_user(5, 3, 3_100_000))
    assert _described(out["a"]) == [
        ("kmsg", 5), ("kernel_event", 5), ("kmsg", 6), ("kmsg", 7),
    ]  # fmt: skip
    event = _expanded(out["a"])[1]
    assert isinstance(event, Event)
    assert (event.fields["class"], event.fields["first_seq"]) == ("kernel_warning", 1)


def test_a_user_written_report_is_never_classified() -> None:
    """Facility user (what /dev/kmsg writers get) never makes an event, whatever the text."""
    harness = Harness({"a": None})
    user = [b"14" + raw[1:] for raw in _raws(SEGFAULT, 1)]
    out = harness.route(user, end=True)
    assert _described(out["a"]) == [("kmsg", 1), ("kmsg", 2)]


def test_a_selection_turns_what_the_sink_does_not_take_into_positions() -> None:
    """A sink taking only oom_kill events gets Positions for records and other events."""
    only_oom = EventSelection.of(["kernel_event"], ["oom_kill"])
    harness = Harness({"all": None, "alerts": None}, {"alerts": only_oom})
    out = harness.route(_raws(SEGFAULT, 1))
    assert _described(out["alerts"]) == [("position", 1), ("position", 2), ("position", 2)]
    assert all(isinstance(item, Position) for item in out["alerts"])
    assert _described(out["all"])[-1] == ("kernel_event", 2)


def test_disabled_kernel_events_route_records_only() -> None:
    """Enabled = false: the stage routes records as the router alone would."""
    harness = Harness({"a": None}, enabled=False)
    out = harness.route(_raws(SEGFAULT, 1), end=True)
    assert _described(out["a"]) == [("kmsg", 1), ("kmsg", 2)]


async def test_an_open_report_is_flushed_after_the_idle_time_with_no_record() -> None:
    """On a live source an open report is queued once no record came for idle_flush_s."""
    harness = Harness({"a": None})
    async with harness.stage.handing_out():
        harness.route(_raws(WARNING_START, 1))
    queued: asyncio.Queue[dict[str, list[Item]]] = asyncio.Queue()

    async def put(out: dict[str, list[Item]]) -> None:
        await queued.put(out)

    flusher = asyncio.create_task(harness.stage.flush_when_idle(put, ["a"]))
    try:
        harness.now = 2.5  # the fake clock: 2.5 s after the last hand-out
        out = await asyncio.wait_for(queued.get(), timeout=10)
    finally:
        flusher.cancel()
    assert _described(out["a"]) == [("kernel_event", 2)]


async def test_no_idle_flush_is_queued_once_the_reader_is_done() -> None:
    """After close() (the streams are ending) the idle flusher queues nothing and returns."""
    harness = Harness({"a": None})
    harness.route(_raws(WARNING_START, 1))
    await harness.stage.close()
    harness.now = 10.0
    queued: list[dict[str, list[Item]]] = []

    async def put(out: dict[str, list[Item]]) -> None:
        queued.append(out)

    await asyncio.wait_for(harness.stage.flush_when_idle(put, ["a"]), timeout=10)
    assert queued == []
