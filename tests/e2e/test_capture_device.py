"""The capture process on the real /dev/kmsg: its scheduling policy.

A flood leaves the ring a few ms, so the capture process asks for real-time priority. What
it costs (CPU while idle or under a trickle, spinning only in a flood) is measured, not
tested: bench/idle_bench.py and bench/capture_bench.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forwarder.config import SourceConfig
from forwarder.options import parse_table
from forwarder.source.capture import Capture
from tests.support.kernel import KMSG, requires_kernel

pytestmark = [requires_kernel, pytest.mark.kernel]


def _stop(capture: Capture) -> None:
    capture.stop()
    process = capture._process
    if process is not None and process.stdout is not None:
        process.stdout.close()  # never attached to a loop: nothing else closes the pipe


@pytest.mark.parametrize(
    ("source", "policy"),
    [
        # As root the /dev/kmsg reader is SCHED_RR, so busy neighbours cannot delay it.
        ({"path": KMSG}, os.SCHED_RR),
        # capture_priority = "normal" opts out of real-time scheduling.
        ({"path": KMSG, "capture_priority": "normal"}, os.SCHED_OTHER),
        # A dump races no ring: its reader stays at normal priority.
        ({"path": "DUMP"}, os.SCHED_OTHER),
    ],
    ids=["device-realtime", "device-opted-out", "dump"],
)
def test_capture_scheduling_policy(source: dict[str, object], policy: int, tmp_path: Path) -> None:
    """The capture process gets real-time priority exactly when it reads the live ring."""
    if source["path"] == "DUMP":
        dump = tmp_path / "kmsg.dump"
        dump.write_bytes(b"6,1,100,-;hello\n")
        source = {"path": dump}
    capture = Capture(parse_table(source, SourceConfig), seek_newest=source["path"] == KMSG)
    capture.open()
    try:
        assert capture.pid is not None
        assert os.sched_getscheduler(capture.pid) == policy
    finally:
        _stop(capture)
