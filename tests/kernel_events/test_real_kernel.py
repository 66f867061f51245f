"""The classifier on real reports of this kernel: each test makes the kernel report, then judges.

Every test opens /dev/kmsg at its end, makes the real kernel print one report (issue 9,
item 7), feeds the kern records that followed to a fresh KernelEventClassifier (flushed at
the end) and asserts the one event of its class with its fields (real_reports.py). It
then proves the machine is as before: cgroup, loop device, mount, iptables rule and
sysctls. test_real_kernel_forwarder.py asserts the same events from a running forwarder.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from forwarder.source.parser import Record
from tests.kernel_events.real_reports import (
    check_cpu_trap,
    check_ext4_error,
    check_hung_task,
    check_netfilter_log,
    check_oom_kill,
    check_user_fault,
    the_one,
)
from tests.support.kernel import requires_kernel
from tests.support.kernel_log import KernelLog, classify
from tests.support.kernel_reports import (
    HUNG_TASK_SYSCTLS,
    TRAPS,
    HungTask,
    comm_tag,
    cpu_trap,
    ext4_error,
    hung_task,
    netfilter_log,
    oom_kill,
    segfault,
)
from tests.support.machine import (
    LoopFilesystem,
    attached_devices,
    iptables_rules,
    loop_mount,
    make_ext4_image,
    mounted,
    process_state,
    read_settled_sysctl,
)
from tests.support.wait import wait_until

pytestmark = [requires_kernel, pytest.mark.kernel, pytest.mark.timeout(30)]
T = TypeVar("T")


@pytest.fixture
def kernel_log() -> Iterator[KernelLog]:
    """The kern records logged from the start of the test on."""
    with KernelLog() as log:
        yield log
        # Shown with a failure: records another suite's flood overwrote before we read them.
        print(f"kernel log: {len(log.records)} kern records read, {log.overruns} overruns")


def _events(log: KernelLog) -> list[dict[str, Any]]:
    return [event.to_dict() for event in classify(log.records)]


def _assert_gone(filesystem: LoopFilesystem) -> None:
    assert not mounted(filesystem.mountpoint)
    assert attached_devices(filesystem.image) == []


# Process names a program may choose; the kernel prints them verbatim inside its reports.
# OOM: the cgroup is named after the comm, so its path holds the same commas.
OOM_COMMS = {"plain": comm_tag, "commas": lambda: f"k({uuid.uuid4().hex[:6]}),a=b"}
HUNG_COMMS = {"plain": comm_tag, "state_inside": lambda: f"k state:R {uuid.uuid4().hex[:5]}"}


@pytest.mark.parametrize("make_comm", OOM_COMMS.values(), ids=OOM_COMMS.keys())
def test_oom_kill_in_a_memory_cgroup_gives_one_event_with_victim_and_cgroup(
    kernel_log: KernelLog, make_comm: Callable[[], str]
) -> None:
    """A child OOM-killed in its own memory cgroup is one complete oom_kill naming it and the cgroup."""
    with oom_kill(make_comm()) as made:
        start = kernel_log.wait_for_text(f"{made.trigger_comm} invoked oom-killer:")
        killed = kernel_log.wait_for_text(f"Killed process {made.pid} ({made.comm})")
    assert not made.cgroup_dir.exists()
    assert process_state(made.pid) == ""

    event = the_one(_events(kernel_log), "oom_kill", pid=made.pid)
    check_oom_kill(event, made)
    assert event["first_seq"] == start.seq
    assert event["last_seq"] >= killed.seq


def test_oom_kill_of_a_bystander_names_victim_and_trigger_apart(kernel_log: KernelLog) -> None:
    """When one task's allocation makes the kernel kill a bigger one, the event tells them apart."""
    with oom_kill(comm_tag(), limit_bytes=48 << 20, bystander=comm_tag("kb")) as made:
        start = kernel_log.wait_for_text(f"{made.trigger_comm} invoked oom-killer:")
        killed = kernel_log.wait_for_text(f"Killed process {made.pid} ({made.comm})")
    assert made.trigger_pid != made.pid
    assert not made.cgroup_dir.exists()

    event = the_one(_events(kernel_log), "oom_kill", pid=made.pid)
    check_oom_kill(event, made)
    assert (event["first_seq"], event["fields"]["trigger_pid"]) == (start.seq, made.trigger_pid)
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
    sysctls_before = {name: read_settled_sysctl(name) for name in SEGFAULT_SYSCTLS}
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
    assert {name: read_settled_sysctl(name) for name in SEGFAULT_SYSCTLS} == sysctls_before

    events = _events(kernel_log)
    event = the_one(events, "user_fault", pid=made.pid)
    check_user_fault(event, made)
    assert (event["first_seq"], event["last_seq"]) == (line.seq, code.seq)
    assert [e for e in events if code.seq < e["first_seq"] <= dump_end.seq] == []


@pytest.mark.parametrize("trap", TRAPS)
def test_cpu_trap_of_a_child_gives_one_user_fault_event(kernel_log: KernelLog, trap: str) -> None:
    """A child running ud2, a division by zero or hlt is one user_fault naming the trap."""
    with cpu_trap(comm_tag(), trap) as made:
        line = kernel_log.wait_for_text(f"traps: {made.comm}[{made.pid}] ")
    assert f"] {trap} ip:" in line.message or f"] trap {trap} ip:" in line.message
    event = the_one(_events(kernel_log), "user_fault", pid=made.pid)
    check_cpu_trap(event, made)
    assert event["first_seq"] == line.seq


def _hung_report_start(log: KernelLog, made: HungTask, *, after_seq: int = -1) -> Record:
    header = f"INFO: task {made.comm}:{made.pid} blocked for more than "
    return log.wait_for(
        lambda r: r.seq > after_seq and r.message.startswith(header),
        what=f"{header}N seconds. (after seq {after_seq})",
    )


def _blocked_seconds(start: Record) -> int:
    return int(start.message.rpartition(" than ")[2].split()[0])


@pytest.mark.parametrize("make_comm", HUNG_COMMS.values(), ids=HUNG_COMMS.keys())
def test_task_blocked_on_a_frozen_ext4_gives_one_hung_task_event(
    kernel_log: KernelLog, tmp_path: Path, make_comm: Callable[[], str]
) -> None:
    """A child writing to an fsfreeze'd ext4 is one hung_task after a 2 s detector timeout."""
    sysctls_before = {name: read_settled_sysctl(name) for name in HUNG_TASK_SYSCTLS}
    with hung_task(make_comm(), tmp_path) as made:
        start = _hung_report_start(kernel_log, made)
        end = kernel_log.wait_for(
            lambda r: r.seq > start.seq and r.message.startswith("Future hung task reports"),
            what="the last hung task report",
        )
    assert {name: read_settled_sysctl(name) for name in HUNG_TASK_SYSCTLS} == sysctls_before
    assert process_state(made.pid) == ""
    _assert_gone(made.filesystem)

    event = the_one(_events(kernel_log), "hung_task", pid=made.pid)
    check_hung_task(event, made)
    assert event["fields"]["blocked_seconds"] == _blocked_seconds(start)
    assert (event["first_seq"], event["last_seq"]) == (start.seq, end.seq)


def test_each_repeated_hung_task_report_is_its_own_event(
    kernel_log: KernelLog, tmp_path: Path
) -> None:
    """The detector reports a still-blocked task again at its next check: two complete events."""
    with hung_task(comm_tag(), tmp_path, reports=2) as made:
        first = _hung_report_start(kernel_log, made)
        second = _hung_report_start(kernel_log, made, after_seq=first.seq)
        kernel_log.wait_for(
            lambda r: r.seq > second.seq and r.message.startswith("Future hung task reports"),
            what="the last hung task report",
        )
    _assert_gone(made.filesystem)

    events = [e for e in _events(kernel_log) if e["class"] == "hung_task"]
    mine = [e for e in events if e["fields"]["pid"] == made.pid]
    assert [e["first_seq"] for e in mine] == [first.seq, second.seq]
    check_hung_task(mine[0], made, last=False)
    check_hung_task(mine[1], made)
    assert mine[0]["last_seq"] < second.seq
    blocked = [e["fields"]["blocked_seconds"] for e in mine]
    assert blocked == [_blocked_seconds(first), _blocked_seconds(second)]
    assert blocked[0] < blocked[1]  # this kernel prints the time blocked so far


class _MidwayError(Exception):
    """The failure a test raises inside a report's block."""


def _fail_inside(manager: AbstractContextManager[T], check: Callable[[T], bool]) -> T:
    """Enter ``manager``, check what it made, fail; what it made, after its undo ran."""
    made: list[T] = []

    def enter_and_fail() -> None:
        with manager as value:
            made.append(value)
            assert check(value)
            raise _MidwayError

    with pytest.raises(_MidwayError):
        enter_and_fail()
    return made[0]


def _blocked(task: HungTask) -> bool:
    """The task is (back) in D state: it may leave it for a moment when the kernel wakes it."""
    wait_until(lambda: process_state(task.pid) == "D", timeout_s=10, what="the task in D state")
    return True


def test_hung_task_undoes_everything_when_the_test_fails_midway(tmp_path: Path) -> None:
    """A failure while a task is blocked still thaws, reaps, restores sysctls, unmounts, detaches."""
    sysctls_before = {name: read_settled_sysctl(name) for name in HUNG_TASK_SYSCTLS}
    made = _fail_inside(hung_task(comm_tag(), tmp_path), _blocked)
    assert {name: read_settled_sysctl(name) for name in HUNG_TASK_SYSCTLS} == sysctls_before
    assert process_state(made.pid) == ""
    _assert_gone(made.filesystem)


def test_a_mount_that_fails_still_detaches_its_loop_device(tmp_path: Path) -> None:
    """When mount refuses the options, the loop device attached for it is detached again."""
    image = tmp_path / "refused.ext4"
    make_ext4_image(image)
    with (
        pytest.raises(AssertionError, match="mount"),
        loop_mount(image, tmp_path / "refused.mnt", "errors=nonsense"),
    ):
        pass
    assert attached_devices(image) == []
    assert not mounted(tmp_path / "refused.mnt")


def test_netfilter_rule_is_deleted_when_the_test_fails_midway() -> None:
    """A failure after the LOG rule was added still deletes exactly that rule."""
    made = _fail_inside(netfilter_log(comm_tag()), lambda log: log.prefix in iptables_rules())
    assert made.prefix not in iptables_rules()


def test_oom_cgroup_is_removed_when_the_test_fails_midway() -> None:
    """A failure after the OOM kill still removes the cgroup the child ran in."""
    made = _fail_inside(oom_kill(comm_tag()), lambda oom: oom.cgroup_dir.is_dir())
    assert not made.cgroup_dir.exists()


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


@pytest.mark.parametrize("chain", ["OUTPUT", "INPUT"])
def test_netfilter_log_rule_on_loopback_gives_one_netfilter_log_event(
    kernel_log: KernelLog, chain: str
) -> None:
    """A UDP datagram on lo hitting a LOG rule is one netfilter_log with prefix, addresses and ports."""
    with netfilter_log(comm_tag(), chain=chain) as made:
        kernel_log.wait_for_text(made.prefix)
    assert made.prefix not in iptables_rules()

    event = the_one(_events(kernel_log), "netfilter_log", prefix=made.prefix)
    check_netfilter_log(event, made)
