"""A running forwarder turns real kernel reports into kernel_event lines next to the records.

``kmsg-forwarder run`` reads the real /dev/kmsg from its newest record into file sinks;
each test makes the kernel print one report (tests/support/kernel_reports.py) and waits
(bounded) for the event line, judged like the classifier's own events in
test_real_kernel.py (real_reports.py), and for the member records shipped beside it.

Other suites on this machine flood the ring at times (120k records/s measured), faster
than a forwarder can read, and the kernel overwrites what it has not read: the forwarder
then says so with a gap event. A report made while the forwarder reported a gap may have
lost records, so it is made again (at most three times), never judged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import ForwarderFactory
from tests.kernel_events.real_reports import (
    check_ext4_error,
    check_hung_task,
    check_netfilter_log,
    check_oom_kill,
    check_user_fault,
    the_one,
)
from tests.support.forwarder import ForwarderProcess, read_ndjson
from tests.support.kernel import inject, requires_kernel
from tests.support.kernel_reports import (
    Ext4Error,
    comm_tag,
    ext4_error,
    hung_task,
    netfilter_log,
    oom_kill,
    segfault,
)

# An OOM report stays open 2 s after its Killed line (a reaper line may join), then the
# forwarder's idle flush closes it; a hung task is reported after 2-4 s. Three attempts.
pytestmark = [requires_kernel, pytest.mark.kernel, pytest.mark.timeout(150)]
EVENT_TIMEOUT_S = 30
AFTER_GAP_S = 5  # an event may still come after a gap that missed the report's records
ATTEMPTS = 3
POLL_S = 0.05

Event = Mapping[str, Any]
T = TypeVar("T")


class RunningForwarder:
    """A forwarder on the real /dev/kmsg from its newest record, into three NDJSON files.

    ``out`` takes everything (records, gaps, kernel events); ``alerts`` only kernel_event
    lines, like an alerting webhook; ``gaps`` only gap events. The tests poll the two
    small files: the records file grows with whatever other suites write to the ring.
    """

    def __init__(self, process: ForwarderProcess, out: Path, alerts: Path, gaps: Path) -> None:
        self.process = process
        self.out = out
        self.alerts = alerts
        self.gaps = gaps

    def kernel_events(self) -> list[Event]:
        """The kernel_event lines written so far."""
        return list(read_ndjson(self.alerts))

    def gap_count(self) -> int:
        """How many gap events (records the kernel overwrote unread) were written so far."""
        return len(read_ndjson(self.gaps))

    def stop(self) -> tuple[list[Event], dict[int, Event]]:
        """Stop (SIGTERM drains the sinks); the kernel events and the records by seq."""
        assert self.process.stop() == 0
        events = self.kernel_events()
        assert {line["event"] for line in events} <= {"kernel_event"}
        everything = read_ndjson(self.out)
        # Every sink got the same kernel events; the records went only to ``out``.
        copies = [line for line in everything if line["event"] == "kernel_event"]
        assert sorted(copies, key=_by_id) == sorted(events, key=_by_id)
        return events, {line["seq"]: line for line in everything if line["event"] == "kmsg"}


def ship(
    forwarder: RunningForwarder,
    produce: Callable[[], AbstractContextManager[T]],
    arrived: Callable[[T, list[Event]], bool],
) -> T:
    """Make a report until ``arrived`` sees its events with no gap reported meanwhile."""
    for _ in range(ATTEMPTS):
        gaps_before = forwarder.gap_count()
        with produce() as made:
            if _wait_for_events_or_gap(forwarder, gaps_before, partial(arrived, made)):
                return made
    raise AssertionError(
        f"the forwarder reported records overwritten unread during each of {ATTEMPTS} "
        "attempts: a neighbour flooded the ring (see the gaps sink's file)"
    )


def _wait_for_events_or_gap(
    forwarder: RunningForwarder, gaps_before: int, arrived: Callable[[list[Event]], bool]
) -> bool:
    """True once the events arrived with no new gap; False when records were lost."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    gap_seen_at = None
    while True:
        if forwarder.gap_count() > gaps_before:
            gap_seen_at = gap_seen_at or time.monotonic()
            if time.monotonic() - gap_seen_at > AFTER_GAP_S:
                return False
        elif arrived(forwarder.kernel_events()):
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {EVENT_TIMEOUT_S} s, and no gap was reported")
        time.sleep(POLL_S)


def _with(class_name: str, **identity: Any) -> Callable[[list[Event]], list[Event]]:
    """The events of ``class_name`` whose fields hold ``identity``."""

    def select(events: list[Event]) -> list[Event]:
        return [
            event
            for event in events
            if event["class"] == class_name
            and all(event["fields"].get(name) == value for name, value in identity.items())
        ]

    return select


@pytest.fixture
def forwarder(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any], tmp_path: Path
) -> RunningForwarder:
    """``kmsg-forwarder run`` on /dev/kmsg (start_at newest, kernel events on by default)."""
    alerts, gaps = tmp_path / "alerts.ndjson", tmp_path / "gaps.ndjson"
    sinks = {
        **file_sink_config["sinks"],
        "alerts": {"type": "file", "path": str(alerts), "events": ["kernel_event"]},
        "gaps": {"type": "file", "path": str(gaps), "events": ["gap"]},
    }
    config = dict(file_sink_config, source={"start_at": "newest"}, sinks=sinks)
    process = forwarder_factory(config).start()
    process.wait_serving()
    return RunningForwarder(process, Path(config["sinks"]["out"]["path"]), alerts, gaps)


def _by_id(event: Event) -> str:
    return str(event["id"])


def _shipped_with_its_records(records: dict[int, Event], event: Event) -> None:
    """The event's envelope is this boot's, and its first and last records were shipped too."""
    first = records[event["first_seq"]]
    assert event["boot_id"] == first["boot_id"]
    assert event["host"] == first["host"]
    assert event["id"] == f"{first['boot_id']}-{event['first_seq']}-{event['class']}"
    assert event["@timestamp"] == first["@timestamp"]
    assert records[event["last_seq"]]["facility"] == "kern"


def test_oom_kill_arrives_as_one_kernel_event_line(forwarder: RunningForwarder) -> None:
    """A memcg OOM kill comes out of the forwarder as one oom_kill line naming victim and cgroup."""
    made = ship(
        forwarder, lambda: oom_kill(comm_tag()), lambda m, e: bool(_with("oom_kill", pid=m.pid)(e))
    )
    events, records = forwarder.stop()
    event = the_one(events, "oom_kill", pid=made.pid)
    check_oom_kill(event, made)
    _shipped_with_its_records(records, event)


def test_segfault_arrives_as_one_kernel_event_line(forwarder: RunningForwarder) -> None:
    """A child's NULL read comes out of the forwarder as one user_fault line."""
    made = ship(
        forwarder,
        lambda: segfault(comm_tag()),
        lambda m, e: bool(_with("user_fault", pid=m.pid)(e)),
    )
    events, records = forwarder.stop()
    event = the_one(events, "user_fault", pid=made.pid)
    check_user_fault(event, made)
    _shipped_with_its_records(records, event)


def test_hung_task_arrives_as_one_kernel_event_line(
    forwarder: RunningForwarder, tmp_path: Path
) -> None:
    """A child blocked on a frozen ext4 comes out of the forwarder as one hung_task line."""
    made = ship(
        forwarder,
        lambda: hung_task(comm_tag(), tmp_path),
        lambda m, e: bool(_with("hung_task", pid=m.pid)(e)),
    )
    events, records = forwarder.stop()
    event = the_one(events, "hung_task", pid=made.pid)
    check_hung_task(event, made)
    _shipped_with_its_records(records, event)


def _ext4_events(made: Ext4Error, events: list[Event]) -> list[Event]:
    """The events from this attempt's lookup error on: loop device names come back."""
    error = _with("fs_error", comm=made.comm)(events)
    return [e for e in events if error and e["first_seq"] >= error[0]["first_seq"]]


def test_ext4_error_arrives_as_error_abort_and_readonly_lines(
    forwarder: RunningForwarder, tmp_path: Path
) -> None:
    """An ext4 lookup error comes out as fs_error, journal-abort fs_error and fs_readonly lines."""
    made = ship(
        forwarder,
        lambda: ext4_error(comm_tag(), tmp_path),
        lambda m, e: bool(_with("fs_readonly", device=m.filesystem.name)(_ext4_events(m, e))),
    )
    events, records = forwarder.stop()
    mine = _ext4_events(made, events)
    check_ext4_error(mine, made)
    _shipped_with_its_records(records, the_one(mine, "fs_error", comm=made.comm))


def test_netfilter_log_arrives_as_one_kernel_event_line(forwarder: RunningForwarder) -> None:
    """A logged loopback datagram comes out of the forwarder as one netfilter_log line."""
    made = ship(
        forwarder,
        lambda: netfilter_log(comm_tag()),
        lambda m, e: bool(_with("netfilter_log", prefix=m.prefix)(e)),
    )
    events, records = forwarder.stop()
    event = the_one(events, "netfilter_log", prefix=made.prefix)
    check_netfilter_log(event, made)
    _shipped_with_its_records(records, event)


class _Ticker(threading.Thread):
    """Writes one tagged user record every ``interval_s`` until stopped (a chatty daemon)."""

    def __init__(self, tag: str, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.tag = tag
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        count = 0
        while not self.stopped.wait(self.interval_s):
            inject([f"{self.tag} tick {count}"])  # a new open file each time: no rate limit
            count += 1


def test_oom_kill_arrives_while_user_space_keeps_writing(forwarder: RunningForwarder) -> None:
    """User records every 100 ms keep the device from idling, yet the OOM event comes out."""
    ticker = _Ticker(comm_tag("kt"), interval_s=0.1)
    ticker.start()
    try:
        made = ship(
            forwarder,
            lambda: oom_kill(comm_tag()),
            lambda m, e: bool(_with("oom_kill", pid=m.pid)(e)),
        )
    finally:
        ticker.stopped.set()
        ticker.join(timeout=10)
    events, _ = forwarder.stop()
    check_oom_kill(the_one(events, "oom_kill", pid=made.pid), made)
