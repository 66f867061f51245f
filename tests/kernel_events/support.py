"""Helpers to build raw kmsg records and run them through a classifier."""

from __future__ import annotations

from typing import Any

from forwarder.kernel_events import KernelEventClassifier
from forwarder.source.parser import Record, parse_record


def kmsg(
    seq: int,
    text: str,
    *,
    ts_usec: int | None = None,
    level: int = 4,
    facility: int = 0,
    flags: str = "-",
    caller: str | None = None,
) -> Record:
    """One parsed record, built from its raw /dev/kmsg form."""
    timestamp = seq * 10 if ts_usec is None else ts_usec
    header = f"{facility * 8 + level},{seq},{timestamp},{flags}"
    if caller is not None:
        header += f",caller={caller}"
    escaped = text.replace("\\", "\\x5c").replace("\t", "\\x09").replace("\n", "\\x0a")
    return parse_record(f"{header};{escaped}\n".encode())


RawItem = tuple[int, int, str, "str | None", str, int]


def raw_records(items: list[RawItem], *, dictionary_every: int = 0) -> list[bytes]:
    """Raw records from (prefix, ts step, flags, caller, text, repeat) items, seq from 1.

    With ``dictionary_every`` N, every Nth record carries USB dictionary lines.
    """
    raws: list[bytes] = []
    seq, ts = 0, 0
    for prefix, step, flags, caller, text, repeat in items:
        for _ in range(repeat):
            seq, ts = seq + 1, ts + step
            header = f"{prefix},{seq},{ts},{flags}" + (f",caller={caller}" if caller else "")
            escaped = text.replace("\\", "\\x5c").replace("\n", "\\x0a")
            with_dictionary = dictionary_every and seq % dictionary_every == 0
            dictionary = "\n SUBSYSTEM=usb\n DEVICE=c189:1" if with_dictionary else ""
            raws.append(f"{header};{escaped}{dictionary}\n".encode())
    return raws


def run(records: list[Record], **options: Any) -> list[dict[str, Any]]:
    """Feed records to a fresh classifier, flush, return the event objects."""
    classifier = KernelEventClassifier(host="h", boot_id="b", clock_offset_ns=0, **options)
    events = []
    for record in records:
        events.extend(classifier.feed(record))
    events.extend(classifier.flush())
    return [event.to_dict() for event in events]


def members(event: dict[str, Any]) -> list[int]:
    """The event's member seqs, spelled out even when contiguous."""
    return event.get("member_seqs", list(range(event["first_seq"], event["last_seq"] + 1)))


WARNING_LINES = [
    "------------[ cut here ]------------",
    "WARNING: CPU: {cpu} PID: {pid} at kernel/foo.c:{line} foo_func+0x1/0x2",
    "Modules linked in: a b",
    "CPU: {cpu} PID: {pid} Comm: worker{pid} Not tainted 6.8.0 #1",
    "RIP: 0010:foo_func+0x1/0x2",
    "Call Trace:",
    " <TASK>",
    " bar+0x10/0x20",
    " </TASK>",
    "---[ end trace 0000000000000000 ]---",
]


def warning_lines(cpu: int, pid: int, line: int) -> list[str]:
    """The lines of one WARNING report."""
    return [text.format(cpu=cpu, pid=pid, line=line) for text in WARNING_LINES]
