"""A catch-up classifies the spooled records the live path never read, each report once, whole."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from forwarder.encoding.chunk import ChunkEncoder
from forwarder.encoding.reference import Event, Identity, encode_record
from forwarder.kernel_events.config import KernelEventsConfig
from forwarder.kernel_events.stage import KernelEventStage
from forwarder.routing import Item, Router
from forwarder.spool import lagging_events
from forwarder.spool.catch_up import SinkCatchUp
from forwarder.spool.spool import Spool
from forwarder.telemetry.events import Emitter
from tests.spool.helpers import open_spool, record
from tests.spool.test_fanout import _all, _events

SEGFAULT = (
    "memhog[4242]: segfault at 0 ip 000055d0c3a1b1c4 sp 00007ffd4c1e5e30 error 6 in "
    "memhog[55d0c3a1b000+1000] likely on CPU 1 (core 1, socket 0)"
)
CODE = "Code: 00 00 00 48 89 e5 c7 00 2a <c7> 00 5d c3"


def _records(first: int, last: int, reports: dict[int, str]) -> list[bytes]:
    """Records ``first..last``; ``reports`` puts a kern text at some seqs (all kern, level 6)."""
    return [
        f"6,{seq},{1000 + seq},-;{reports[seq]}".encode() if seq in reports else record(seq)
        for seq in range(first, last + 1)
    ]


SEGFAULT_AT_10 = {10: SEGFAULT, 11: CODE}


def _identity(spool: Spool, boot_id: str) -> Identity:
    return Identity("node-1", boot_id, spool.clock_offset_ns(boot_id) or 0)


def _stage(spool: Spool, boot_id: str) -> KernelEventStage:
    return KernelEventStage(
        KernelEventsConfig(), _identity(spool, boot_id), {"web": None}, {}, Emitter(None)
    )


def _catch_up(
    spool: Spool,
    position: tuple[str, int],
    classify_through: tuple[str, int],
    dropped: list[str] | None = None,
) -> SinkCatchUp:
    live = _stage(spool, classify_through[0])
    return SinkCatchUp(
        "web",
        spool,
        position,
        identity_of=lambda boot_id: _identity(spool, boot_id),
        encode=encode_record,
        min_level=7,
        on_parse_error=lambda _raw, _error: None,
        on_failure=lambda _raw, _error, _seq: None,
        events_for=live.for_sink,
        classify_through=classify_through,
        on_event_dropped=None if dropped is None else dropped.append,
    )


def _live_events(spool: Spool, boot_id: str, raws: list[bytes]) -> list[dict[str, object]]:
    """The kernel events the live path makes of ``raws`` read from the start (the reference)."""
    identity = _identity(spool, boot_id)
    stage = _stage(spool, boot_id)
    chunk = ChunkEncoder(identity).encode(raws, lambda _raw, _error: None, lambda *_args: None)
    out: dict[str, list[Item]] = {"web": []}
    router = Router(identity, {"web": None}, min_level=7, now_ns=lambda: 0)
    stage.route(chunk, raws, router, out, end=False)
    return [e for e in _events(out["web"]) if e["event"] == "kernel_event"]


def test_spooled_records_the_live_path_never_read_make_their_kernel_events_here(
    tmp_path: Path,
) -> None:
    """The same event the live path makes, right after the record that completed it."""
    spool = open_spool(tmp_path, boot_id="boot-a")
    raws = _records(0, 19, SEGFAULT_AT_10)
    spool.append(list(range(20)), raws)
    events = _events(_all(_catch_up(spool, ("boot-a", 4), ("boot-a", 19))))
    kinds = [(event["event"], event.get("seq")) for event in events]
    assert kinds[5:8] == [("kmsg", 10), ("kmsg", 11), ("kernel_event", None)]
    assert [e for e in events if e["event"] == "kernel_event"] == _live_events(
        spool, "boot-a", raws
    )
    assert [event["seq"] for event in events if event["event"] == "kmsg"] == list(range(5, 20))


@pytest.mark.parametrize("position", [9, 10])
def test_a_report_straddling_the_position_comes_out_once_and_whole(
    tmp_path: Path, position: int
) -> None:
    """The warm-up feeds the records before the position: the report keeps its first record."""
    spool = open_spool(tmp_path, boot_id="boot-a")
    raws = _records(0, 19, SEGFAULT_AT_10)
    spool.append(list(range(20)), raws)
    events = _events(_all(_catch_up(spool, ("boot-a", position), ("boot-a", 19))))
    kernel_events = [e for e in events if e["event"] == "kernel_event"]
    assert kernel_events == _live_events(spool, "boot-a", raws)
    assert (kernel_events[0]["first_seq"], kernel_events[0]["record_count"]) == (10, 2)


def test_a_sink_past_the_report_does_not_get_it_again(tmp_path: Path) -> None:
    """Its checkpoint stands at the report's last record: it had the event before."""
    spool = open_spool(tmp_path, boot_id="boot-a")
    spool.append(list(range(20)), _records(0, 19, SEGFAULT_AT_10))
    events = _events(_all(_catch_up(spool, ("boot-a", 11), ("boot-a", 19))))
    assert [e for e in events if e["event"] == "kernel_event"] == []


def test_records_the_live_path_classifies_make_no_event_here(tmp_path: Path) -> None:
    """Above ``classify_through`` the live stage makes the events (held for the cursor)."""
    spool = open_spool(tmp_path, boot_id="boot-a")
    spool.append(list(range(20)), _records(0, 19, SEGFAULT_AT_10))
    events = _events(_all(_catch_up(spool, ("boot-a", 4), ("boot-a", 9))))
    assert [e for e in events if e["event"] == "kernel_event"] == []
    assert [event["seq"] for event in events] == list(range(5, 20))


def test_an_older_boots_open_report_is_closed_before_its_reboot_gap(tmp_path: Path) -> None:
    """The old boot will get no more records: its open report is flushed where it ended."""
    old = open_spool(tmp_path, boot_id="boot-a")
    old.append(list(range(11)), _records(0, 10, {10: SEGFAULT}))  # the boot ended mid-report
    old.close()
    spool = Spool(old.config, tmp_path)
    spool.open("boot-b", 2_000_000_000_000)
    spool.append(list(range(20)), _records(0, 19, SEGFAULT_AT_10))
    events = _events(_all(_catch_up(spool, ("boot-a", 4), ("boot-b", 9))))
    kinds = [(e["event"], e.get("boot_id"), e.get("seq") or e.get("first_seq")) for e in events]
    assert kinds[5:8] == [
        ("kmsg", "boot-a", 10),
        ("kernel_event", "boot-a", 10),
        ("gap", "boot-a", 11),
    ]
    # boot-b's report is above classify_through: the live stage's, not this catch-up's.
    assert [e["boot_id"] for e in events if e["event"] == "kernel_event"] == ["boot-a"]


def test_held_kernel_events_past_the_bound_are_dropped_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond MAX_HELD_EVENTS a live event is dropped, counted and logged; the rest arrive."""
    monkeypatch.setattr(lagging_events, "MAX_HELD_EVENTS", 2)
    spool = open_spool(tmp_path, boot_id="boot-a")
    spool.append(list(range(6)), _records(0, 5, {}))
    dropped: list[str] = []
    catch_up = _catch_up(spool, ("boot-a", -1), ("boot-a", -1), dropped)
    held = [
        Event("kernel_event", f"boot-a-{seq}-audit", "boot-a", seq, 0, b'{"event":"kernel_event"}')
        for seq in range(4)
    ]
    catch_up.hold(held)
    assert dropped == ["web", "web"]
    assert catch_up.dropped_events == 2
    events = _all(catch_up)
    assert [item.id for item in events if isinstance(item, Event)] == [
        "boot-a-0-audit",
        "boot-a-1-audit",
    ]
    assert orjson.loads(held[0].json) == {"event": "kernel_event"}


@pytest.mark.parametrize(("ending", "expected"), [(SEGFAULT, 1), ("plain record", 0)])
def test_a_report_open_where_an_older_boot_ended_comes_before_the_reboot_gap(
    tmp_path: Path, ending: str, expected: int
) -> None:
    """The sink had all of the old boot; a report still open at its end was never made."""
    old = open_spool(tmp_path, boot_id="boot-a")
    old.append(list(range(20)), _records(0, 19, {**SEGFAULT_AT_10, 19: ending}))
    old.close()
    spool = Spool(old.config, tmp_path)
    spool.open("boot-b", 2_000_000_000_000)
    spool.append(list(range(5)), _records(0, 4, {}))
    events = _events(_all(_catch_up(spool, ("boot-a", 19), ("boot-b", -1))))
    kinds = [(e["event"], e["boot_id"], e.get("seq", e.get("first_seq"))) for e in events]
    assert kinds == [("kernel_event", "boot-a", 19)] * expected + [
        ("gap", "boot-a", 20),
        *[("kmsg", "boot-b", seq) for seq in range(5)],
    ]


def test_with_nothing_of_the_new_boot_yet_the_old_boots_end_comes_at_the_hand_over(
    tmp_path: Path,
) -> None:
    """Right after the reboot the spool has no record of the new boot: finish() closes the old one."""
    old = open_spool(tmp_path, boot_id="boot-a")
    old.append(list(range(20)), _records(0, 19, {19: SEGFAULT}))
    old.close()
    spool = Spool(old.config, tmp_path)
    spool.open("boot-b", 2_000_000_000_000)
    catch_up = _catch_up(spool, ("boot-a", 19), ("boot-b", -1))
    assert catch_up.next_items(64) is None
    events = _events(catch_up.finish(_identity(spool, "boot-b")))
    assert [(e["event"], e.get("first_seq")) for e in events] == [
        ("kernel_event", 19),
        ("gap", 20),
    ]


class _Uncomparable(Event):
    """An event that fails the test if anything compares it (a list scan per event)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        raise AssertionError("held events are released by position, never compared")

    __hash__ = Event.__hash__


def test_releasing_held_events_never_compares_them(tmp_path: Path) -> None:
    """One pass by position: comparing each event with the released ones took 7 s for 10,000."""
    spool = open_spool(tmp_path, boot_id="boot-a")
    spool.append(list(range(5)), _records(0, 4, {}))  # the cursor passes half of them
    catch_up = _catch_up(spool, ("boot-a", -1), ("boot-a", -1))
    catch_up.hold(
        [
            _Uncomparable("kernel_event", f"boot-a-{seq}-audit", "boot-a", seq, 0, b"{}")
            for seq in range(10)
        ]
    )
    first = catch_up.next_items(64)
    assert first is not None
    assert [item.checkpoint_seq for item in first if isinstance(item, Event)] == list(range(5))
    rest = catch_up.finish(_identity(spool, "boot-a"))
    assert [item.checkpoint_seq for item in rest if isinstance(item, Event)] == list(range(5, 10))
