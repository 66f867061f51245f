"""The capture process on the real /dev/kmsg: scheduling and spinning (bench/capture_bench.py).

A flood leaves the ring a few ms, so the capture process asks for real-time priority; it
spins on read() only in a flood, so a quiet system pays no CPU for it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from forwarder.capture import Capture
from forwarder.config import SourceConfig
from tests.support.kernel import KMSG, inject, requires_kernel, unique_tag

pytestmark = [requires_kernel, pytest.mark.kernel]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    capture = Capture(SourceConfig.model_validate(source), seek_newest=source["path"] == KMSG)
    capture.open()
    try:
        assert capture.pid is not None
        assert os.sched_getscheduler(capture.pid) == policy
    finally:
        _stop(capture)


def test_idle_device_capture_sleeps() -> None:
    """With the ring quiet, the capture process sleeps in poll() instead of spinning."""
    capture = Capture(SourceConfig(path=KMSG), seek_newest=True)
    capture.open()
    try:
        assert capture.pid is not None
        time.sleep(0.5)  # start-up (imports) is not what is measured
        before = _cpu_s(capture.pid)
        time.sleep(1.0)
        # Spinning would take the whole second; other tests' records cost a little.
        assert _cpu_s(capture.pid) - before < 0.3
    finally:
        _stop(capture)


def test_trickle_of_records_does_not_make_capture_spin() -> None:
    """At ~1,000 records/s (far below a flood) the capture sleeps between records, not spins."""
    capture = Capture(SourceConfig(path=KMSG), seek_newest=True)
    capture.open()
    try:
        assert capture.pid is not None
        time.sleep(0.5)
        before = _cpu_s(capture.pid)
        tag = unique_tag()
        for index in range(1_000):  # one record a millisecond: a 2 ms spin would never end
            inject([f"{tag} trickle {index}"])
            time.sleep(0.001)
        # Spinning through the trickle costs about a CPU second; sleeping, a few hundredths.
        assert _cpu_s(capture.pid) - before < 0.5
    finally:
        _stop(capture)
