"""soft_lockup, hard_lockup, hung_task and rcu_stall (SPEC.md sections 3.6-3.9).

Formats: kernel/watchdog.c, kernel/watchdog_hld.c, kernel/hung_task.c,
kernel/sched/core.c (``sched_show_task``), kernel/rcu/tree_stall.h and tree_exp.h.
"""

from __future__ import annotations

import re
from typing import Final

from forwarder.kernel_events.crashes import stack_end_verdict
from forwarder.kernel_events.report import Verdict
from forwarder.kernel_events.stack import StackReport, taint_line_fields
from forwarder.kernel_events.values import Fields, apply_match
from forwarder.source.parser import Record

_SOFT: Final = re.compile(
    r"(?:(?:NMI )?watchdog: )?BUG: soft lockup - CPU#(?P<cpu>\d+) stuck for "
    r"(?P<stuck_seconds>\d+)s! \[(?P<comm>.+):(?P<pid>\d+)\]"
)
_HARD: Final = re.compile(
    r"(?P<detector>NMI watchdog|watchdog): (?:CPU(?P<detected_by_cpu>\d+): )?Watchdog detected "
    r"hard LOCKUP on cpu (?P<cpu>\d+)"
)
_LOCKUP_EXTRA: Final = re.compile(r"CPU#\d+ Utilization every|\t#\d+: ")
_HUNG: Final = re.compile(
    r"INFO: task (?P<comm>.+):(?P<pid>\d+) blocked for more than (?P<blocked_seconds>\d+) seconds\."
)
# sched_show_task (5.15+) prints ``task:%-15.15s state:%c``, maybe ``  running task    ``,
# then, with pr_cont, `` stack:... pid:... [tgid:...] ppid:... ...``: when another CPU
# printks in between, that tail becomes a record of its own with flag ``c``.
_SCHED_HEAD: Final = re.compile(r"task:.{1,15}? +state:(?P<state>\S)(?:  running task    )?")
_SCHED_HEAD_AFTER_COMM: Final = re.compile(r" state:(?P<state>\S)(?:  running task    )?")
_SCHED_TAIL: Final = re.compile(
    r" stack: *\d+ +pid: *\d+(?: +tgid: *(?P<tgid>\d+))? +ppid: *(?P<ppid>\d+)"
)
_COMM_BYTES: Final = 15  # TASK_COMM_LEN - 1, the width the kernel pads the comm to
_SCHED_TASK_5_4: Final = re.compile(r".{1,16} +[A-Za-z] *\d+ +\d+ +\d+ 0x[0-9a-f]+$")
_HUNG_EXTRA: Final = re.compile(
    r"\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\"|      Blocked by coredump"
)
_BLOCKER: Final = re.compile(
    r"INFO: task .+:\d+ is blocked on an? (?P<blocked_on>[\w-]+(?: [\w-]+)?)"
    r"(?:,| likely owned by task (?P<owner_comm>.+):(?P<owner_pid>\d+)\.)"
)
_SUPPRESSED: Final = "Future hung task reports are suppressed"
_RCU_HEADER: Final = re.compile(
    r"(?:rcu: )?INFO: (?P<flavor>\w+) (?P<kind>detected stalls on CPUs/tasks:|self-detected "
    r"stall on CPU|detected expedited stalls on CPUs/tasks: )(?P<rest>.*)$"
)
_RCU_KINDS: Final = {"detected stalls": "stall", "self-detected": "self_detected"}
_RCU_CPU: Final = re.compile(r"(?:rcu: )?\t(?P<cpu>\d+)-\S{4}: \(")
_RCU_SUMMARY: Final = re.compile(
    r"(?:rcu: )?\t\((?:detected by (?P<detected_by>\d+), )?t=(?P<jiffies>\d+) jiffies,? "
    r"g=(?P<gp>-?\d+),? q=(?P<qlen>\d+)(?: ncpus=(?P<ncpus>\d+))?\)"
)
_RCU_EXPEDITED: Final = re.compile(r"\{ (?P<cpus>.*?) \} (?P<jiffies>\d+) jiffies")
_EXPEDITED_CPU: Final = re.compile(r"(?:^| )(\d+)-")
_RCU_STARVED: Final = re.compile(
    r"(?:rcu: )?\w+ kthread starved for (?P<starved_jiffies>\d+) jiffies"
)
_RCU_LINE: Final = re.compile(r"rcu: |\t|NMI backtrace for cpu|Task dump for CPU")
_INT: Final = dict.fromkeys(
    [
        "cpu",
        "pid",
        "stuck_seconds",
        "detected_by_cpu",
        "blocked_seconds",
        "tgid",
        "ppid",
        "owner_pid",
        "detected_by",
        "jiffies",
        "gp",
        "qlen",
        "ncpus",
        "starved_jiffies",
    ],
    int,
)


class LockupReport(StackReport):
    """soft_lockup / hard_lockup: the watchdog line, modules, regs and stack."""

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Ends at ``</TASK>`` or, pre-5.15, at the first non-grammar line after a frame."""
        del record, previous_text
        kind = self.take_stack_line(text)
        if kind is None:
            if _LOCKUP_EXTRA.match(text):
                return Verdict.JOIN
            return Verdict.CLOSE if self.saw_frame and not self.saw_task else Verdict.REJECT
        return stack_end_verdict(self, kind)

    def accepts_caller(self, record: Record) -> bool:
        """``NMI backtrace for cpu N`` blocks of other CPUs attach to the lockup report."""
        return super().accepts_caller(record) or record.message.startswith("NMI backtrace for")


class SoftLockupReport(LockupReport):
    """soft_lockup."""

    class_name = "soft_lockup"


class HardLockupReport(LockupReport):
    """hard_lockup."""

    class_name = "hard_lockup"


def detect_lockup(record: Record, text: str) -> LockupReport | None:
    """Open a soft or hard lockup at its watchdog line."""
    fields: Fields = {}
    match = _SOFT.match(text)
    if match:
        apply_match(fields, match, _INT)
        return SoftLockupReport(record, fields)
    match = _HARD.match(text)
    if match:
        apply_match(fields, match, _INT)
        return HardLockupReport(record, fields)
    return None


class HungTaskReport(StackReport):
    """hung_task: the INFO line, taint line, sched_show_task line, stack, blocker hints."""

    class_name = "hung_task"

    def __init__(self, record: Record, fields: Fields) -> None:
        super().__init__(record, fields)
        self.wants_sched_tail = False

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Complete at ``</TASK>``; blocker lines may still follow, anything else closes."""
        del previous_text
        if self._take_hung_line(text):
            return Verdict.JOIN
        if self.end_met:
            return Verdict.CLOSE
        if taint_line_fields(text, self.fields) or _HUNG_EXTRA.match(text):
            return Verdict.JOIN
        if self._take_sched_line(text, fragment="c" in record.flags):
            return Verdict.JOIN
        kind = self.take_stack_line(text)
        if kind is None:
            return Verdict.CLOSE if self.saw_frame and not self.saw_task else Verdict.REJECT
        if kind == "task_close" or (kind == "frame" and self.frame_ends_stack):
            self.end_met = True
        return Verdict.JOIN

    def wants_fragment(self, text: str) -> bool:
        """The ``stack: pid: ppid:`` tail of a sched_show_task line split off by another CPU."""
        return (self.wants_sched_tail and text.startswith(" stack:")) or super().wants_fragment(
            text
        )

    def _take_sched_line(self, text: str, *, fragment: bool) -> bool:
        """The ``task:<comm> state:...`` line (or its split-off tail): state, tgid, ppid.

        Comm and pid stay the INFO line's. A comm may itself hold `` state:X`` (a process
        names itself): the line is read at that comm, padded to 15 bytes as the kernel pads
        it, before guessing where the comm ends.
        """
        if fragment:
            tail = _SCHED_TAIL.match(text) if self.wants_sched_tail else None
            if tail is not None:
                apply_match(self.fields, tail, _INT)
                self.wants_sched_tail = False
            return tail is not None
        comm = str(self.fields["comm"])
        width = len(f"task:{comm}") + max(0, _COMM_BYTES - len(comm.encode()))
        head = None
        if text.startswith(f"task:{comm}") and not text[len(f"task:{comm}") : width].strip():
            head = _SCHED_HEAD_AFTER_COMM.match(text, width)
        head = head or _SCHED_HEAD.match(text)
        if head is None:
            return False
        self.fields["state"] = head["state"]
        tail = _SCHED_TAIL.match(text, head.end())
        if tail is not None:
            apply_match(self.fields, tail, _INT)
        self.wants_sched_tail = head.end() == len(text)
        return True

    def _take_hung_line(self, text: str) -> bool:
        match = _BLOCKER.match(text)
        if match:
            apply_match(self.fields, match, _INT)
            return True
        if text.startswith(_SUPPRESSED):
            self.fields["further_reports_suppressed"] = True
            return True
        return False


def detect_hung_task(record: Record, text: str) -> HungTaskReport | None:
    """Open a hung_task at ``INFO: task comm:pid blocked for more than N seconds.``."""
    match = _HUNG.match(text)
    if match is None:
        return None
    fields: Fields = {}
    apply_match(fields, match, _INT)
    return HungTaskReport(record, fields)


class RcuStallReport(StackReport):
    """rcu_stall: header, per-CPU lines, summary, starvation, backtraces and dumps."""

    class_name = "rcu_stall"

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Ends at the first non-grammar record (or the next stall header)."""
        del previous_text
        if _RCU_HEADER.match(text):
            return Verdict.CLOSE
        if self._take_rcu_line(text):
            return Verdict.JOIN
        if (
            _SCHED_HEAD.match(text)
            or _SCHED_TASK_5_4.match(text)
            or ("c" in record.flags and _SCHED_TAIL.match(text))
            or self.take_stack_line(text)
        ):
            return Verdict.JOIN
        return Verdict.JOIN if _RCU_LINE.match(text) else Verdict.CLOSE

    def wants_fragment(self, text: str) -> bool:
        """The 5.x tab-indented ``(detected by ...)`` summary is its own ``c`` record."""
        return (
            not self.end_met and _RCU_SUMMARY.match(text) is not None
        ) or super().wants_fragment(text)

    def accepts_caller(self, record: Record) -> bool:
        """``NMI backtrace for cpu N`` blocks of other CPUs attach to the stall report."""
        return super().accepts_caller(record) or record.message.startswith("NMI backtrace for")

    def _take_rcu_line(self, text: str) -> bool:
        match = _RCU_CPU.match(text)
        if match:
            self.fields.setdefault("cpus", []).append(int(match["cpu"]))
            return True
        match = _RCU_SUMMARY.match(text)
        if match:
            apply_match(self.fields, match, _INT)
            self.end_met = True
            return True
        match = _RCU_STARVED.match(text)
        if match:
            self.fields["kthread_starved"] = True
            self.fields["starved_jiffies"] = int(match["starved_jiffies"])
            return True
        return False


def detect_rcu_stall(record: Record, text: str) -> RcuStallReport | None:
    """Open an rcu_stall at its ``INFO: <flavor> ... stall`` header."""
    match = _RCU_HEADER.match(text)
    if match is None:
        return None
    kind = next((v for k, v in _RCU_KINDS.items() if match["kind"].startswith(k)), "expedited")
    fields: Fields = {"flavor": match["flavor"], "kind": kind}
    report = RcuStallReport(record, fields)
    expedited = _RCU_EXPEDITED.search(match["rest"]) if kind == "expedited" else None
    if expedited:
        cpus = [int(cpu) for cpu in _EXPEDITED_CPU.findall(expedited["cpus"])]
        fields.update(cpus=cpus, jiffies=int(expedited["jiffies"]))
        report.end_met = True
    return report
