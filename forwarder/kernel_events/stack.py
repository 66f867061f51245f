"""The generic x86 report grammar (SPEC.md section 1.3) and the common fields (1.5).

``CPU: n [UID: u ]PID: p Comm: c ...``, ``Hardware name:``, ``Workqueue:``, ``RIP:``,
``Code:`` (only right after that report's ``RIP:``), the register lines, ``Call Trace:``,
the ``<TASK>``/``<IRQ>``/``<NMI>`` markers, frame lines and ``Modules linked in:``.
Formats: lib/dump_stack.c, arch/x86/kernel/dumpstack.c, arch/x86/kernel/process_64.c.
"""

from __future__ import annotations

import re
from typing import Final

from forwarder.kernel_events.report import Report
from forwarder.kernel_events.values import Fields, taint_letters
from forwarder.source.parser import Record

_LINE: Final = re.compile(
    r"(?P<frame> (?:\? )?[^\s+]+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[[^\]]+\])?(?: [0-9a-f]+)?$)"
    r"|(?P<task_open> <TASK>$)|(?P<task_close> </TASK>$)"
    r"|(?P<irq_open> <(?:IRQ|NMI|SOFTIRQ)>$)|(?P<irq_close> </(?:IRQ|NMI|SOFTIRQ)>$)"
    r"|(?P<rip>RIP: )|(?P<code>Code: )|(?P<cpu>CPU: \d+ (?:UID: \d+ )?PID: )"
    r"|(?P<hardware>Hardware name: )|(?P<workqueue>Workqueue: )"
    r"|(?P<other>Tainted: \[|R(?:SP|AX|BX|CX|DX|SI|DI|BP|\d\d?): |[FGCDE]S: |CR[0-4]: |DR[0-7]: "
    r"|PKRU: |Call Trace:|Modules linked in:|irq event stamp:|hardirqs last |softirqs last "
    r"|NMI backtrace for cpu \d+|Sending NMI from CPU|PGD [0-9a-f]+ |Kernel Offset: )"
)
_CPU_LINE: Final = re.compile(
    r"CPU: (?P<cpu>\d+) (?:UID: (?P<uid>\d+) )?PID: (?P<pid>\d+) Comm: (?P<comm>.{0,20}?) "
    r"(?P<taint>Not tainted|Tainted: [A-Z ]*?) +(?P<release>\S+) #\S*"
    r"(?:.*? PREEMPT\((?P<preempt>\w+)\))?"
)
_TAINT_LINE: Final = re.compile(r" +(?P<taint>Not tainted|Tainted: [A-Z ]*?) +(?P<release>\S+) #")
# show_iret_regs prints ``RSP: ... EFLAGS: %08lx`` and then, with pr_cont, this.
_RSP_TAIL: Final = " ORIG_RAX: "
_RIP_FUNCTION: Final = re.compile(
    r"RIP: [0-9a-f]{4}:(?P<function>[^\s+]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[(?P<module>[^\]\s]+)\])?"
)


def stack_line_kind(text: str) -> str | None:
    """The grammar kind of one line (``frame``, ``rip``, ``cpu``, ...) or None."""
    match = _LINE.match(text)
    return match.lastgroup if match else None


def taint_line_fields(text: str, fields: Fields) -> bool:
    """Parse hung_task's ``      Not tainted 6.18.44 #1`` line; False if it is not one."""
    match = _TAINT_LINE.match(text)
    if match is None:
        return False
    fields.setdefault("taint_flags", taint_letters(match["taint"]))
    fields.setdefault("kernel_release", match["release"])
    return True


class StackReport(Report):
    """A report that carries the generic grammar: it tracks stack state and common fields.

    ``cpu_line_is_trigger`` (oom_kill): the CPU line names the allocating task, so its
    PID/Comm fill ``trigger_pid``/``trigger_comm`` and its UID nothing.
    """

    cpu_line_is_trigger = False

    def __init__(
        self, record: Record, fields: Fields, *, started: bool = True, key: str | None = None
    ) -> None:
        super().__init__(record, fields, started=started, end_met=False, key=key)
        self.saw_task = False
        self.saw_frame = False
        self.in_irq = False

    def wants_fragment(self, text: str) -> bool:
        """`` ORIG_RAX: ...``: the pr_cont end of ``RSP:``, split off by another CPU's printk."""
        return text.startswith(_RSP_TAIL) and self.last_text.startswith("RSP: ")

    def take_stack_line(self, text: str) -> str | None:
        """Take one generic-grammar line: update the stack state and common fields."""
        kind = "other" if self.wants_fragment(text) else stack_line_kind(text)
        if kind is None or (kind == "code" and not self.last_text.startswith("RIP: ")):
            return None
        self._track(kind, text)
        return kind

    def _track(self, kind: str, text: str) -> None:
        """Update the stack state and the common fields from a line of ``kind``."""
        if kind == "frame":
            self.saw_frame = True
        elif kind == "task_open":
            self.saw_task = True
        elif kind == "irq_open":
            self.in_irq = True
        elif kind == "irq_close":
            self.in_irq = False
        elif kind == "cpu":
            self._take_cpu_line(text)
        elif kind == "hardware":
            self.fields.setdefault("hardware", text[15:])
        elif kind == "workqueue":
            self.fields.setdefault("workqueue", text[11:])
        elif kind == "rip" and "rip_function" not in self.fields:
            match = _RIP_FUNCTION.match(text)
            if match:
                self.fields["rip_function"] = match["function"]
                if match["module"]:
                    self.fields["rip_module"] = match["module"]

    @property
    def frame_ends_stack(self) -> bool:
        """A frame outside IRQ/NMI sections of a stack without ``<TASK>`` (pre-5.15)."""
        return not self.saw_task and not self.in_irq

    def _take_cpu_line(self, text: str) -> None:
        match = _CPU_LINE.match(text)
        if match is None or "kernel_release" in self.fields:
            return
        fields = self.fields
        fields.setdefault("cpu", int(match["cpu"]))
        if self.cpu_line_is_trigger:
            fields.setdefault("trigger_pid", int(match["pid"]))
            fields.setdefault("trigger_comm", match["comm"])
        else:
            fields.setdefault("pid", int(match["pid"]))
            fields.setdefault("comm", match["comm"])
            if match["uid"] is not None:
                fields.setdefault("uid", int(match["uid"]))
        fields["taint_flags"] = taint_letters(match["taint"])
        fields["kernel_release"] = match["release"]
        if match["preempt"]:
            fields["preempt_model"] = match["preempt"]
