"""A running forwarder turns real kernel reports into kernel_event lines next to the records.

``kmsg-forwarder run`` reads the real /dev/kmsg from its newest record into a file sink;
each test makes the kernel print one report (tests/support/kernel_reports.py) and waits
(bounded) for the event line, judged like the classifier's own events in
test_real_kernel.py (real_reports.py), and for the member records shipped beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
from tests.support.kernel import requires_kernel
from tests.support.kernel_reports import (
    comm_tag,
    ext4_error,
    hung_task,
    netfilter_log,
    oom_kill,
    segfault,
)
from tests.support.wait import wait_until

# An OOM report stays open 2 s after its Killed line (a reaper line may join), then the
# forwarder's idle flush closes it: the waits allow for that, and the hung task's 2-4 s.
pytestmark = [requires_kernel, pytest.mark.kernel, pytest.mark.timeout(60)]
EVENT_TIMEOUT_S = 30

Event = Mapping[str, Any]


class RunningForwarder:
    """A forwarder on the real /dev/kmsg from its newest record, into two NDJSON files.

    ``out`` takes everything (records, gaps, kernel events); ``alerts`` takes only
    kernel_event lines, like an alerting webhook would: the tests poll that small file,
    since the records file grows with whatever other suites write to the ring.
    """

    def __init__(self, process: ForwarderProcess, out: Path, alerts: Path) -> None:
        self.process = process
        self.out = out
        self.alerts = alerts

    def kernel_events(self, class_name: str, **identity: Any) -> list[Event]:
        """The kernel_event lines of ``class_name`` whose fields hold ``identity`` so far."""
        return [
            line
            for line in read_ndjson(self.alerts)
            if line["class"] == class_name
            and all(line["fields"].get(name) == value for name, value in identity.items())
        ]

    def wait_for_event(self, class_name: str, **identity: Any) -> None:
        """Wait (bounded) until a kernel_event of ``class_name`` with ``identity`` is written."""
        wait_until(
            lambda: self.kernel_events(class_name, **identity),
            timeout_s=EVENT_TIMEOUT_S,
            what=f"kernel_event {class_name} {identity}",
        )

    def stop(self) -> tuple[list[Event], dict[int, Event]]:
        """Stop (SIGTERM drains both sinks); the kernel events and the records by seq."""
        assert self.process.stop() == 0
        events: list[Event] = list(read_ndjson(self.alerts))
        assert {line["event"] for line in events} == {"kernel_event"}
        everything = read_ndjson(self.out)
        # Both sinks got the same kernel events; the records went only to ``out``.
        copies = [line for line in everything if line["event"] == "kernel_event"]
        assert sorted(copies, key=_by_id) == sorted(events, key=_by_id)
        return events, {line["seq"]: line for line in everything if line["event"] == "kmsg"}


@pytest.fixture
def forwarder(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any], tmp_path: Path
) -> RunningForwarder:
    """``kmsg-forwarder run`` on /dev/kmsg (start_at newest, kernel events on by default)."""
    alerts = tmp_path / "alerts.ndjson"
    sinks = {
        **file_sink_config["sinks"],
        "alerts": {"type": "file", "path": str(alerts), "events": ["kernel_event"]},
    }
    config = dict(file_sink_config, source={"start_at": "newest"}, sinks=sinks)
    process = forwarder_factory(config).start()
    process.wait_serving()
    return RunningForwarder(process, Path(config["sinks"]["out"]["path"]), alerts)


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
    with oom_kill(comm_tag()) as made:
        forwarder.wait_for_event("oom_kill", pid=made.pid)
    events, records = forwarder.stop()
    event = the_one(events, "oom_kill", pid=made.pid)
    check_oom_kill(event, made)
    _shipped_with_its_records(records, event)


def test_segfault_arrives_as_one_kernel_event_line(forwarder: RunningForwarder) -> None:
    """A child's NULL read comes out of the forwarder as one user_fault line."""
    with segfault(comm_tag()) as made:
        forwarder.wait_for_event("user_fault", pid=made.pid)
    events, records = forwarder.stop()
    event = the_one(events, "user_fault", pid=made.pid)
    check_user_fault(event, made)
    _shipped_with_its_records(records, event)


def test_hung_task_arrives_as_one_kernel_event_line(
    forwarder: RunningForwarder, tmp_path: Path
) -> None:
    """A child blocked on a frozen ext4 comes out of the forwarder as one hung_task line."""
    with hung_task(comm_tag(), tmp_path) as made:
        forwarder.wait_for_event("hung_task", pid=made.pid)
    events, records = forwarder.stop()
    event = the_one(events, "hung_task", pid=made.pid)
    check_hung_task(event, made)
    _shipped_with_its_records(records, event)


def test_ext4_error_arrives_as_error_abort_and_readonly_lines(
    forwarder: RunningForwarder, tmp_path: Path
) -> None:
    """An ext4 lookup error comes out as fs_error, journal-abort fs_error and fs_readonly lines."""
    with ext4_error(comm_tag(), tmp_path) as made:
        forwarder.wait_for_event("fs_readonly", device=made.filesystem.name)
    events, records = forwarder.stop()
    check_ext4_error(events, made)
    _shipped_with_its_records(records, the_one(events, "fs_error", comm=made.comm))


def test_netfilter_log_arrives_as_one_kernel_event_line(forwarder: RunningForwarder) -> None:
    """A logged loopback datagram comes out of the forwarder as one netfilter_log line."""
    with netfilter_log(comm_tag()) as made:
        forwarder.wait_for_event("netfilter_log", prefix=made.prefix)
    events, records = forwarder.stop()
    event = the_one(events, "netfilter_log", prefix=made.prefix)
    check_netfilter_log(event, made)
    _shipped_with_its_records(records, event)
