"""The classifier on real reports of this kernel: each test makes the kernel report, then judges.

Every test opens /dev/kmsg at its end, makes the real kernel print one report (issue 9,
item 7), feeds the kern records that followed to a fresh KernelEventClassifier (flushed at
the end) and asserts the one event of its class with its fields (real_reports.py). It
then proves the machine is as before: cgroup, loop device, mount, iptables rule and
sysctls. test_real_kernel_forwarder.py asserts the same events from a running forwarder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel_events.real_reports import (
    check_ext4_error,
    check_hung_task,
    check_netfilter_log,
    check_oom_kill,
    check_user_fault,
    the_one,
)
from tests.support.kernel import requires_kernel
from tests.support.kernel_reports import (
    HUNG_TASK_SYSCTLS,
    KernelLog,
    LoopFilesystem,
    attached_devices,
    classify,
    comm_tag,
    ext4_error,
    hung_task,
    iptables_rules,
    mounted,
    netfilter_log,
    oom_kill,
    process_state,
    read_sysctl,
    segfault,
)

pytestmark = [requires_kernel, pytest.mark.kernel, pytest.mark.timeout(30)]


@pytest.fixture
def kernel_log() -> Iterator[KernelLog]:
    """The kern records logged from the start of the test on."""
    with KernelLog() as log:
        yield log


def _events(log: KernelLog) -> list[dict[str, object]]:
    return [event.to_dict() for event in classify(log.records)]


def _assert_gone(filesystem: LoopFilesystem) -> None:
    assert not mounted(filesystem.mountpoint)
    assert attached_devices(filesystem.image) == []


def test_oom_kill_in_a_memory_cgroup_gives_one_event_with_victim_and_cgroup(
    kernel_log: KernelLog,
) -> None:
    """A child OOM-killed in its own memory cgroup is one complete oom_kill naming it and the cgroup."""
    with oom_kill(comm_tag()) as made:
        start = kernel_log.wait_for_text(f"{made.comm} invoked oom-killer:")
        killed = kernel_log.wait_for_text(f"Killed process {made.pid} ({made.comm})")
    assert not made.cgroup_dir.exists()
    assert process_state(made.pid) == ""

    event = the_one(_events(kernel_log), "oom_kill", pid=made.pid)
    check_oom_kill(event, made)
    assert event["first_seq"] == start.seq
    assert event["last_seq"] >= killed.seq


SEGFAULT_SYSCTLS = ("debug.exception-trace", "kernel.print-fatal-signals")


@pytest.mark.parametrize("fatal_signal_dump", [False, True], ids=["plain", "print_fatal_signals"])
def test_segfault_of_a_child_gives_one_user_fault_event(
    kernel_log: KernelLog, fatal_signal_dump: bool
) -> None:
    """A child reading address 0 is one user_fault naming its comm, pid, ip and vma.

    With kernel.print-fatal-signals on, the fatal-signal register dump that follows is
    shipped as records and joins no event.
    """
    sysctls_before = {name: read_sysctl(name) for name in SEGFAULT_SYSCTLS}
    with segfault(comm_tag(), fatal_signal_dump=fatal_signal_dump) as made:
        line = kernel_log.wait_for_text(f"{made.comm}[{made.pid}]: segfault at 0 ")
        code = kernel_log.wait_for(
            lambda r: r.seq > line.seq and r.message.startswith("Code: "), what="Code:"
        )
        dump_end = code
        if fatal_signal_dump:
            dump_end = kernel_log.wait_for(
                lambda r: r.seq > code.seq and r.message.startswith("FS: "), what="the dump's FS:"
            )
    assert {name: read_sysctl(name) for name in SEGFAULT_SYSCTLS} == sysctls_before

    events = _events(kernel_log)
    event = the_one(events, "user_fault", pid=made.pid)
    check_user_fault(event, made)
    assert (event["first_seq"], event["last_seq"]) == (line.seq, code.seq)
    assert [e for e in events if code.seq < e["first_seq"] <= dump_end.seq] == []


def test_task_blocked_on_a_frozen_ext4_gives_one_hung_task_event(
    kernel_log: KernelLog, tmp_path: Path
) -> None:
    """A child writing to an fsfreeze'd ext4 is one hung_task after a 2 s detector timeout."""
    sysctls_before = {name: read_sysctl(name) for name in HUNG_TASK_SYSCTLS}
    with hung_task(comm_tag(), tmp_path) as made:
        start = kernel_log.wait_for_text(
            f"INFO: task {made.comm}:{made.pid} blocked for more than {made.timeout_s} seconds."
        )
        end = kernel_log.wait_for(
            lambda r: r.seq > start.seq and r.message.startswith("Future hung task reports"),
            what="the last hung task report",
        )
    assert {name: read_sysctl(name) for name in HUNG_TASK_SYSCTLS} == sysctls_before
    assert process_state(made.pid) == ""
    _assert_gone(made.filesystem)

    event = the_one(_events(kernel_log), "hung_task", pid=made.pid)
    check_hung_task(event, made)
    assert (event["first_seq"], event["last_seq"]) == (start.seq, end.seq)


def test_ext4_error_on_a_cleared_directory_gives_error_abort_and_readonly_events(
    kernel_log: KernelLog, tmp_path: Path
) -> None:
    """Listing a directory whose inode debugfs cleared gives fs_error, journal abort and fs_readonly."""
    with ext4_error(comm_tag(), tmp_path) as made:
        kernel_log.wait_for_text(
            f"EXT4-fs ({made.filesystem.name}): Remounting filesystem read-only"
        )
    _assert_gone(made.filesystem)

    check_ext4_error(_events(kernel_log), made)


def test_netfilter_log_rule_on_loopback_gives_one_netfilter_log_event(
    kernel_log: KernelLog,
) -> None:
    """A UDP datagram on lo hitting a LOG rule is one netfilter_log with prefix, addresses and ports."""
    with netfilter_log(comm_tag()) as made:
        kernel_log.wait_for_text(made.prefix)
    assert made.prefix not in iptables_rules()

    event = the_one(_events(kernel_log), "netfilter_log", prefix=made.prefix)
    check_netfilter_log(event, made)
