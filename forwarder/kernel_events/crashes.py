"""kernel_oops, kernel_bug, kernel_warning and kernel_panic (SPEC.md sections 3.3-3.5, 3.10).

Formats: arch/x86/mm/fault.c (page-fault lines), arch/x86/kernel/dumpstack.c
(``__die_header``), lib/bug.c (``kernel BUG at``), kernel/panic.c (``__warn``, ``panic``).
"""

from __future__ import annotations

import re
from typing import Final

from forwarder.kernel_events.report import Report, Verdict
from forwarder.kernel_events.stack import StackReport
from forwarder.kernel_events.values import Fields, apply_match, hex_address
from forwarder.source.parser import Record

CUT_HERE: Final = "------------[ cut here ]------------"
_END_TRACE: Final = re.compile(r"---\[ end trace (?P<end_trace_id>[0-9a-f]+) \]---")
_PAGE_FAULT: Final = re.compile(
    r"BUG: (?:(?P<null>kernel NULL pointer dereference, address: |unable to handle kernel NULL "
    r"pointer dereference at )|unable to handle (?:page fault for address: |kernel paging "
    r"request at ))(?P<address>[0-9a-f]+)$"
)
_PF_ACCESS: Final = re.compile(r"#PF: \w+ (?P<access>.+?) access in (?P<mode>\w+) mode")
_PF_CODE: Final = re.compile(
    r"#PF: error_code\(0x(?P<pf_error_code>[0-9a-f]+)\) - (?P<pf_reason>.*)"
)
_DIE: Final = re.compile(
    r"(?:Oops: )?(?P<header>Oops|general protection fault(?:, (?:probably|maybe) for "
    r"(?:non-canonical )?address (?P<gp_address>0x[0-9a-f]+))?|invalid opcode|divide error"
    r"|stack segment|double fault|alignment check|bounds|int3): (?P<die_error>[0-9a-f]{4}) "
    r"\[#(?P<die_counter>\d+)\](?P<flags>.*)$"
)
_BUG_AT: Final = re.compile(r"kernel BUG at (?P<bug_file>.+):(?P<bug_line>\d+)!$")
_CAUSES: Final = {
    "general protection fault": "general_protection",
    "invalid opcode": "invalid_opcode",
    "divide error": "divide_error",
}
_BUG: Final = re.compile(r"BUG: (?P<bug_type>.+?)(?:: | at |$)(?P<detail>.*)$")
_BUG_DETAILS: Final = (
    re.compile(r"(?P<comm>.+)/(?P<pid>\d+)/(?P<preempt_count>0x[0-9a-f]+)$"),
    re.compile(r"(?P<file>[^:]+):(?P<line>\d+)$"),
    re.compile(r"in_atomic\(\): \d+, irqs_disabled\(\): \d+, (?:non_block: \d+, )?pid: "
               r"(?P<pid>\d+), name: (?P<comm>.+)$"),
    re.compile(r"preempt_count: (?P<preempt_count>[0-9a-f]+), expected: [0-9a-f]+$"),
    re.compile(r"in process (?P<comm>.+?)  pfn:"),
)  # fmt: skip
_BUG_EXTRA: Final = re.compile(
    r"in_atomic\(\)|preempt_count: |RCU nest depth|Preemption disabled at:|page:|raw: |head: "
    r"|flags: 0x|page dumped because|INFO: lockdep is turned off|\d+ locks? held by"
)
_WARNING: Final = re.compile(
    r"WARNING: CPU: (?P<cpu>\d+) PID: (?P<pid>\d+) at (?:(?P<file>[^\s:]+):(?P<line>\d+) )?"
    r"(?P<function>[^\s+]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[(?P<module>[^\]\s]+)\])?"
)
_PANIC_REASON: Final = re.compile(r"Kernel panic - not syncing: (?P<reason>.*)$")
_PANIC_LINES: Final = re.compile(
    r"Kernel Offset: (?P<kernel_offset>0x[0-9a-f]+) from|Rebooting in (?P<reboot_seconds>\d+) "
    r"seconds|Shutting down cpus with NMI|Kernel Offset: disabled"
)
_INT: Final = {"line": int, "pid": int, "cpu": int, "bug_line": int, "die_counter": int}


class OopsReport(StackReport):
    """kernel_oops: page-fault lines, die header, regs and stack, end trace, summary."""

    class_name = "kernel_oops"

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Members until ``end trace``; then the executive summary until a non-grammar line."""
        del record, previous_text
        if self.end_met:
            return Verdict.JOIN if self.take_stack_line(text) else Verdict.CLOSE
        match = _END_TRACE.match(text)
        if match:
            self.fields["end_trace_id"] = match["end_trace_id"]
            self.end_met = True
            return Verdict.JOIN
        if text.startswith("#PF"):
            self._take_page_fault_detail(text)
            return Verdict.JOIN
        if "header" not in self.fields and take_die_header(text, self.fields):
            return Verdict.JOIN
        return Verdict.JOIN if self.take_stack_line(text) else Verdict.REJECT

    def absorb_cut_here(self, warning: Report) -> None:
        """Take the ``cut here`` record that opened a kernel_warning as the first member."""
        self.member_seqs[:0] = warning.member_seqs
        self.first_ts_usec = warning.first_ts_usec
        self.level_code = min(self.level_code, warning.level_code)

    def _take_page_fault_detail(self, text: str) -> None:
        for pattern in (_PF_ACCESS, _PF_CODE):
            match = pattern.match(text)
            if match:
                apply_match(self.fields, match, {"pf_error_code": lambda v: int(v, 16)})


def take_die_header(text: str, fields: Fields) -> bool:
    """Parse ``Oops: 0000 [#1] SMP NOPTI`` (6.10+: ``Oops: Oops: ...``) into fields."""
    match = _DIE.match(text)
    if match is None:
        return False
    fields["header"] = match["header"]
    if match["gp_address"]:
        fields["gp_address"] = hex_address(match["gp_address"])
    fields["die_error"] = int(match["die_error"], 16)
    fields["die_counter"] = int(match["die_counter"])
    fields["die_flags"] = match["flags"].split()
    header = match["header"]
    cause = _CAUSES.get("general protection fault" if header.startswith("general") else header)
    fields.setdefault("cause", cause or "other")
    return True


def detect_oops(record: Record, text: str) -> OopsReport | None:
    """Open a kernel_oops at a page-fault ``BUG:`` line, a die header or ``kernel BUG at``."""
    fields: Fields = {}
    match = _PAGE_FAULT.match(text)
    if match:
        fields["cause"] = "null_deref" if match["null"] else "page_fault"
        fields["address"] = hex_address(match["address"])
        return OopsReport(record, fields)
    match = _BUG_AT.match(text)
    if match:
        fields.update(cause="bug", bug_file=match["bug_file"], bug_line=int(match["bug_line"]))
        return OopsReport(record, fields)
    if take_die_header(text, fields):
        return OopsReport(record, fields)
    return None


class BugReport(StackReport):
    """kernel_bug: a ``BUG:`` line that is no page fault or lockup, and its stack."""

    class_name = "kernel_bug"

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Ends at ``</TASK>`` or, pre-5.15, at the first non-grammar line after a frame."""
        del record, previous_text
        kind = self.take_stack_line(text)
        if kind is None:
            if _BUG_EXTRA.match(text):
                _take_bug_detail(text, self.fields)
                return Verdict.JOIN
            return Verdict.CLOSE if self.saw_frame and not self.saw_task else Verdict.REJECT
        return stack_end_verdict(self, kind)


def stack_end_verdict(report: StackReport, kind: str) -> Verdict:
    """The end condition of the stack-ending classes for a line of grammar ``kind``."""
    if kind == "task_close":
        report.end_met = True
        return Verdict.DONE
    if kind == "frame" and report.frame_ends_stack:
        report.end_met = True
    return Verdict.JOIN


def _take_bug_detail(detail: str, fields: Fields) -> None:
    for pattern in _BUG_DETAILS:
        match = pattern.match(detail)
        if match:
            for name, value in match.groupdict().items():
                fields.setdefault(name, _bug_value(name, value))
            return


def _bug_value(name: str, value: str) -> int | str:
    if name in _INT:
        return int(value)
    if name == "preempt_count" and not value.startswith("0x"):
        return hex_address(value)
    return value


def detect_bug(record: Record, text: str) -> BugReport | None:
    """Open a kernel_bug at ``BUG: <type>...`` (page faults and lockups are other classes)."""
    if text.startswith(("BUG: kernel NULL", "BUG: unable to handle", "BUG: soft lockup")):
        return None
    match = _BUG.match(text)
    if match is None:
        return None
    fields: Fields = {"bug_type": match["bug_type"]}
    if match["detail"]:
        fields["detail"] = match["detail"]
        _take_bug_detail(match["detail"], fields)
    return BugReport(record, fields)


class WarningReport(StackReport):
    """kernel_warning: ``cut here``, the WARN() text, ``WARNING:``, regs, stack, end trace."""

    class_name = "kernel_warning"

    def __init__(self, record: Record, fields: Fields, *, saw_warning_line: bool) -> None:
        super().__init__(record, fields)
        self.saw_warning_line = saw_warning_line

    @property
    def only_cut_here(self) -> bool:
        """Nothing but the ``cut here`` record yet (a ``kernel BUG at`` may take it)."""
        return len(self.member_seqs) == 1 and not self.saw_warning_line

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Complete at ``end trace``; text lines before ``WARNING:`` are the message."""
        del previous_text
        match = _END_TRACE.match(text)
        if match:
            self.fields["end_trace_id"] = match["end_trace_id"]
            self.end_met = True
            return Verdict.DONE
        if not self.saw_warning_line:
            if take_warning_line(text, self.fields):
                self.saw_warning_line = True
                return Verdict.JOIN
            if record.level_code == 4 and not _BUG_AT.match(text) and " OUT=" not in text:
                message = self.fields.get("message")
                self.fields["message"] = text if message is None else f"{message}\n{text}"
                return Verdict.JOIN
        return Verdict.JOIN if self.take_stack_line(text) else Verdict.REJECT


def take_warning_line(text: str, fields: Fields) -> bool:
    """Parse ``WARNING: CPU: n PID: p at file:line func+0x../0x.. [mod]`` into fields."""
    match = _WARNING.match(text)
    if match is None:
        return False
    for name, value in match.groupdict().items():
        if value is not None:
            fields.setdefault(name, int(value) if name in _INT else value)
    return True


def detect_warning(record: Record, text: str) -> WarningReport | None:
    """Open a kernel_warning at ``cut here`` or, when that is missing, at ``WARNING:``."""
    if text == CUT_HERE:
        return WarningReport(record, {}, saw_warning_line=False)
    fields: Fields = {}
    if take_warning_line(text, fields):
        return WarningReport(record, fields, saw_warning_line=True)
    return None


class PanicReport(StackReport):
    """kernel_panic: the reason line, maybe a stack, offsets, the end marker."""

    class_name = "kernel_panic"

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Complete at ``---[ end Kernel panic``."""
        del record, previous_text
        if text.startswith("---[ end Kernel panic"):
            self.end_met = True
            return Verdict.DONE
        match = _PANIC_LINES.match(text)
        if match:
            apply_match(self.fields, match, {"reboot_seconds": int})
            return Verdict.JOIN
        return Verdict.JOIN if self.take_stack_line(text) else Verdict.REJECT


def detect_panic(record: Record, text: str) -> PanicReport | None:
    """Open a kernel_panic at ``Kernel panic - not syncing:``."""
    match = _PANIC_REASON.match(text)
    return PanicReport(record, {"reason": match["reason"]}) if match else None
