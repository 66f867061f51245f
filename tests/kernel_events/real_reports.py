"""What the event of each real kernel report must say, shared by both real-kernel suites.

test_real_kernel.py feeds the records to the classifier itself; test_real_kernel_forwarder.py
reads the events a running ``kmsg-forwarder`` wrote. Both judge an event's JSON object
(``KernelEvent.to_dict()`` or a sink line) with the functions here, so the two levels
cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from tests.support.kernel_reports import (
    CpuTrap,
    Ext4Error,
    HungTask,
    NetfilterLog,
    OomKill,
    Segfault,
)

Event = Mapping[str, Any]
UDP_HEADER_BYTES = 8
IPV4_HEADER_BYTES = 20


def the_one(events: Iterable[Event], class_name: str, **identity: Any) -> Event:
    """The single event of ``class_name`` whose fields hold ``identity``; fails unless one."""
    mine = [
        event
        for event in events
        if event["class"] == class_name
        and all(event["fields"].get(name) == value for name, value in identity.items())
    ]
    assert len(mine) == 1, f"{len(mine)} {class_name} events with {identity}: {mine}"
    return mine[0]


def check_oom_kill(event: Event, made: OomKill) -> None:
    """The victim, its cgroup and the memcg constraint, from the whole 80-record report."""
    fields = event["fields"]
    assert event["complete"] is True
    assert event["level"] == "err"  # the Killed line
    assert event["record_count"] >= 40  # header, stack, memcg stats, task table, summary
    expected = {
        "scope": "memcg",
        "constraint": "CONSTRAINT_MEMCG",
        "oom_memcg": made.memcg,
        "task_memcg": made.memcg,
        "pid": made.pid,
        "comm": made.comm,
        "uid": 0,
        "trigger_pid": made.trigger_pid,
        "trigger_comm": made.trigger_comm,
        "kill_reason": "Memory cgroup out of memory",
        "memcg_limit_kb": made.limit_bytes // 1024,
        "kernel_release": os.uname().release,
        "oom_score_adj": 0,
    }
    assert {name: fields.get(name) for name in expected} == expected
    assert fields["anon_rss_kb"] > 0
    assert fields["total_vm_kb"] >= fields["anon_rss_kb"]


def check_user_fault(event: Event, made: Segfault) -> None:
    """A NULL read: address 0, error 4 (read, user, page not present), ip inside the vma."""
    fields = event["fields"]
    assert event["complete"] is True
    expected = {
        "kind": "segfault",
        "comm": made.comm,
        "pid": made.pid,
        "address": "0x0",
        "error": 4,
        "error_flags": ["not_present", "read", "user"],
    }
    assert {name: fields.get(name) for name in expected} == expected
    start, size, ip = (int(fields[name], 16) for name in ("vma_start", "vma_size", "ip"))
    assert start <= ip < start + size, fields
    assert int(fields["sp"], 16) > 0
    assert "<" in fields["code"]  # the Code: record joined, with the faulting byte marked


def check_cpu_trap(event: Event, made: CpuTrap) -> None:
    """The trap's name and kind, and the faulting instruction's place in its page."""
    fields = event["fields"]
    assert (event["record_count"], event["complete"], event["level"]) == (1, True, "info")
    general_protection = made.trap == "general protection fault"
    expected = {
        "kind": "general_protection" if general_protection else "trap",
        "trap": None if general_protection else made.trap,
        "comm": made.comm,
        "pid": made.pid,
        "error": 0,
        # Python's anonymous mmap is shared memory, which the kernel names dev/zero.
        "vma_file": "dev/zero",
        "vma_offset": hex(made.fault_offset),
        "vma_size": "0x1000",
    }
    assert {name: fields.get(name) for name in expected} == expected
    assert int(fields["ip"], 16) == int(fields["vma_start"], 16) + made.fault_offset
    assert int(fields["sp"], 16) > 0


def check_hung_task(event: Event, made: HungTask, *, last: bool = True) -> None:
    """The blocked child, its state and parent; the ``last`` report says more are suppressed."""
    fields = event["fields"]
    assert event["complete"] is True
    assert event["level"] == "err"
    expected = {
        "comm": made.comm,
        "pid": made.pid,
        "tgid": made.pid,
        "ppid": os.getpid(),
        "state": "D",
        "kernel_release": os.uname().release,
        "further_reports_suppressed": True if last else None,
    }
    assert {name: fields.get(name) for name in expected} == expected
    # 6.18 prints how long the task has been blocked, not the timeout: 2, then 4, 6, ...
    assert fields["blocked_seconds"] >= made.timeout_s


def check_ext4_error(events: Iterable[Event], made: Ext4Error) -> None:
    """The lookup error, the journal abort and the read-only remount: one event each."""
    events = list(events)
    device = made.filesystem.name
    error = the_one(events, "fs_error", comm=made.comm)
    assert error["level"] == "crit"
    expected = {
        "fs": "ext4",
        "kind": "error",
        "device": device,
        "function": "ext4_lookup",
        "inode": 2,  # the root directory, whose entry names the cleared inode
        "comm": made.comm,
        "message": f"deleted inode referenced: {made.cleared_inode}",
    }
    assert {name: error["fields"].get(name) for name in expected} == expected
    assert error["fields"]["line"] > 0
    abort = the_one(events, "fs_error", device=f"{device}-8")
    assert abort["fields"] == {"fs": "jbd2", "kind": "journal_abort", "device": f"{device}-8"}
    readonly = the_one(events, "fs_readonly", device=device)
    assert readonly["fields"] == {"fs": "ext4", "device": device}
    assert readonly["level"] == "crit"
    assert error["first_seq"] < abort["first_seq"] < readonly["first_seq"]
    for event in (error, abort, readonly):
        assert event["record_count"] == 1
        assert event["complete"] is True


def check_netfilter_log(event: Event, made: NetfilterLog) -> None:
    """The prefix, the loopback interfaces, the addresses, the ports and both lengths."""
    fields = event["fields"]
    assert event["record_count"] == 1
    assert event["level"] == "warning"
    inbound = made.chain == "INPUT"
    expected = {
        "prefix": made.prefix,
        "in": "lo" if inbound else "",
        "out": "" if inbound else "lo",
        "ip_version": 4,
        "src": "127.0.0.1",
        "dst": "127.0.0.1",
        "proto": "UDP",
        "spt": made.sport,
        "dpt": made.dport,
        "udp_len": UDP_HEADER_BYTES + made.payload_bytes,
        "len": IPV4_HEADER_BYTES + UDP_HEADER_BYTES + made.payload_bytes,
        "ttl": 64,
    }
    assert {name: fields.get(name) for name in expected} == expected
    if inbound:  # loopback's all-zero Ethernet header, IPv4 ethertype
        assert fields["mac"] == "00:00:00:00:00:00:00:00:00:00:00:00:08:00"
        assert (fields["mac_dst"], fields["mac_src"]) == ("00:00:00:00:00:00",) * 2
        assert fields["ethertype"] == "0x0800"
    else:  # an output packet has no input device, so no MAC=
        assert "mac" not in fields
