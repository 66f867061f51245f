"""user_fault: segfaults, general protection faults and traps of user processes.

SPEC.md section 3.2; arch/x86/mm/fault.c ``show_signal_msg``, arch/x86/kernel/traps.c
``show_signal``, mm/memory.c ``print_vma_addr``. One record when pr_cont merges; the
`` in <file>[...]`` and `` likely on CPU`` parts may come as ``c`` fragments, and the
``Code:`` line (user bytes, no ``RIP:`` before it) follows.
"""

from __future__ import annotations

import re
from typing import Final

from forwarder.kernel_events.report import Report, Verdict
from forwarder.kernel_events.values import Fields, hex_address, page_fault_flags
from forwarder.source.parser import Record

_SEGFAULT: Final = re.compile(
    r"(?P<comm>.+)\[(?P<pid>\d+)\]: segfault at (?P<address>[0-9a-f]+) ip (?P<ip>[0-9a-f]+) "
    r"sp (?P<sp>[0-9a-f]+) error (?P<error>[0-9a-f]+)(?P<rest>.*)$"
)
_TRAP: Final = re.compile(
    r"traps: (?P<comm>.+?)\[(?P<pid>\d+)\] (?P<desc>.+?) ip:(?P<ip>[0-9a-f]+) "
    r"sp:(?P<sp>[0-9a-f]+) error:(?P<error>[0-9a-f]+)(?P<rest>.*)$"
)
_VMA: Final = re.compile(
    r" in (?P<vma_file>.+?)\[(?:(?P<vma_offset>[0-9a-f]+),)?(?P<vma_start>[0-9a-f]+)"
    r"\+(?P<vma_size>[0-9a-f]+)\]"
)
_CPU: Final = re.compile(
    r" likely on CPU (?P<cpu>\d+) \(core (?P<core>\d+), socket (?P<socket>\d+)\)"
)


class UserFaultReport(Report):
    """One fault of a user process, waiting for its fragments and ``Code:`` line."""

    class_name = "user_fault"

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Join the `` in``/`` likely on CPU`` fragments and one ``Code:`` not after ``RIP:``."""
        if text.startswith("Code: "):
            if "code" in self.fields or previous_text.startswith("RIP: "):
                return Verdict.REJECT
            self.fields["code"] = text[6:]
            return Verdict.DONE
        if "c" in record.flags and self.wants_fragment(text):
            take_vma_and_cpu(text, self.fields)
            return Verdict.JOIN
        return Verdict.REJECT

    def wants_fragment(self, text: str) -> bool:
        """A `` in ...`` or `` likely on CPU`` part not seen yet."""
        return (text.startswith(" in ") and "vma_file" not in self.fields) or (
            text.startswith(" likely on CPU") and "cpu" not in self.fields
        )


def take_vma_and_cpu(text: str, fields: Fields) -> None:
    """Parse the mapping (`` in file[offset,start+size]``) and CPU parts of a fault line."""
    match = _VMA.search(text)
    if match:
        for name, value in match.groupdict().items():
            if value is not None:
                fields[name] = value if name == "vma_file" else hex_address(value)
    match = _CPU.search(text)
    if match:
        fields.update((name, int(value)) for name, value in match.groupdict().items())


def detect_user_fault(record: Record, text: str) -> UserFaultReport | None:
    """Open a user_fault at a segfault or ``traps:`` line."""
    match = _SEGFAULT.match(text)
    fields: Fields
    if match:
        error = int(match["error"], 16)
        fields = {"kind": "segfault", "comm": match["comm"], "pid": int(match["pid"])}
        fields["address"] = hex_address(match["address"])
        fields.update(ip=hex_address(match["ip"]), sp=hex_address(match["sp"]), error=error)
        fields["error_flags"] = page_fault_flags(error)
    else:
        match = _TRAP.match(text)
        if match is None:
            return None
        desc = match["desc"]
        fields = {"kind": "general_protection" if desc == "general protection fault" else "trap"}
        if desc.startswith("trap "):
            fields["trap"] = desc[5:]
        fields.update(comm=match["comm"], pid=int(match["pid"]))
        fields.update(ip=hex_address(match["ip"]), sp=hex_address(match["sp"]))
        fields["error"] = int(match["error"], 16)
    take_vma_and_cpu(match["rest"], fields)
    return UserFaultReport(record, fields, key=match["pid"])
