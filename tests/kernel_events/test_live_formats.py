"""Real records of Linux 6.18.44 that the shared vectors lack, caught by the real-kernel tests.

tests/kernel_events/test_real_kernel.py makes the kernel report; these are records it
printed when something else happened at the same time (another CPU's printk splitting a
KERN_CONT line into a ``c`` record; another suite writing user records right after an OOM
report) or when the reporting process had a hostile name. Each case pins the classifier to
that exact text (seq, ts_usec, level, flags as read).
"""

from __future__ import annotations

from typing import Any

import pytest

from forwarder.kernel_events import KernelEventClassifier
from tests.kernel_events.support import kmsg, run

Raw = tuple[int, int, int, str, str]  # seq, ts_usec, level, flags, text

# A hung task whose comm holds " state:R", reported while another CPU printed: both
# pr_cont tails (sched_show_task's " stack: pid: ppid:", show_iret_regs' " ORIG_RAX:")
# became records of their own, flag "c", level 4 (the seq gaps are that CPU's records).
HUNG_TASK_SPLIT: list[Raw] = [
    (
        19824655,
        1148274490,
        3,
        "-",
        "INFO: task k state:R 1a2b3:30932 blocked for more than 2 seconds.",
    ),
    (19824664, 1148275580, 3, "-", "      Not tainted 6.18.44-fc-v1272 #1"),
    (
        19824666,
        1148275583,
        3,
        "-",
        '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
    ),
    (19824668, 1148277355, 6, "-", "task:k state:R 1a2b3 state:D"),
    (
        19824671,
        1148277360,
        4,
        "c",
        " stack:0     pid:30932 tgid:30932 ppid:30867  task_flags:0x400000 flags:0x00080001",
    ),
    (19824674, 1148277366, 6, "-", "Call Trace:"),
    (19824675, 1148277370, 6, "-", " <TASK>"),
    (19824686, 1148277388, 6, "-", " __schedule+0x3dc/0xf60"),
    (19824691, 1148277402, 6, "-", " schedule+0x23/0xa0"),
    (19824695, 1148277408, 6, "-", " percpu_rwsem_wait+0x15f/0x1d0"),
    (19824698, 1148277417, 6, "-", " ? __pfx_percpu_rwsem_wake_function+0x10/0x10"),
    (19824702, 1148277425, 6, "-", " __percpu_down_read+0x88/0x150"),
    (19824705, 1148277432, 6, "-", " mnt_want_write+0x96/0xc0"),
    (19824709, 1148277441, 6, "-", " path_openat+0x4cc/0x1320"),
    (19824714, 1148277449, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824716, 1148277458, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824719, 1148277462, 6, "-", " ? get_page_from_freelist+0x1550/0x1840"),
    (19824723, 1148277471, 6, "-", " do_filp_open+0x106/0x1c0"),
    (19824728, 1148277482, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824732, 1148277490, 6, "-", " do_sys_openat2+0x88/0xe0"),
    (19824736, 1148277499, 6, "-", " __x64_sys_openat+0x5d/0xa0"),
    (19824740, 1148277506, 6, "-", " do_syscall_64+0x71/0x290"),
    (19824742, 1148277512, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824744, 1148277516, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824747, 1148277520, 6, "-", " ? set_ptes.isra.0+0x36/0x90"),
    (19824749, 1148277526, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824751, 1148277529, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824754, 1148277533, 6, "-", " ? do_anonymous_page+0x4f3/0xaa0"),
    (19824756, 1148277538, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824759, 1148277542, 6, "-", " ? ___pte_offset_map+0x17/0x100"),
    (19824762, 1148277549, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824765, 1148277553, 6, "-", " ? __handle_mm_fault+0xa6c/0xfb0"),
    (19824769, 1148277562, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824772, 1148277565, 6, "-", " ? count_memcg_events+0xf5/0x1c0"),
    (19824774, 1148277570, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824777, 1148277575, 6, "-", " ? handle_mm_fault+0x224/0x340"),
    (19824780, 1148277580, 6, "-", " ? srso_alias_return_thunk+0x5/0xfbef5"),
    (19824781, 1148277584, 6, "-", " ? exc_page_fault+0x176/0x770"),
    (19824785, 1148277590, 6, "-", " entry_SYSCALL_64_after_hwframe+0x76/0x7e"),
    (19824787, 1148277595, 6, "-", "RIP: 0033:0x7f7a13d16011"),
    (19824789, 1148277599, 6, "-", "RSP: 002b:00007fffb57b9020 EFLAGS: 00000202"),
    (19824792, 1148277603, 4, "c", " ORIG_RAX: 0000000000000101"),
    (
        19824793,
        1148277606,
        6,
        "-",
        "RAX: ffffffffffffffda RBX: 0000000000080041 RCX: 00007f7a13d16011",
    ),
    (
        19824796,
        1148277610,
        6,
        "-",
        "RDX: 0000000000080041 RSI: 00007f7a13c17980 RDI: 00000000ffffff9c",
    ),
    (
        19824797,
        1148277613,
        6,
        "-",
        "RBP: 00007f7a13c17980 R08: 0000000000000000 R09: 0000000000000000",
    ),
    (
        19824800,
        1148277617,
        6,
        "-",
        "R10: 0000000000000180 R11: 0000000000000202 R12: 0000000000080041",
    ),
    (
        19824801,
        1148277620,
        6,
        "-",
        "R13: 0000000000000180 R14: 00007f7a13b715f0 R15: 00000000ffffff9c",
    ),
    (19824806, 1148277630, 6, "-", " </TASK>"),
    (
        19824809,
        1148277633,
        6,
        "-",
        "Future hung task reports are suppressed, see sysctl kernel.hung_task_warnings",
    ),
]
# The same hostile comm, printed without interference: one sched_show_task record.
HUNG_TASK_WHOLE: list[Raw] = [
    (100, 1000, 3, "-", "INFO: task kr  state:D x:25439 blocked for more than 2 seconds."),
    (101, 1001, 3, "-", "      Not tainted 6.18.44-fc-v1272 #1"),
    (
        102,
        1002,
        3,
        "-",
        '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
    ),
    (
        103,
        1003,
        6,
        "-",
        (
            "task:kr  state:D x   state:D stack:0     pid:25439 tgid:25439 ppid:25420  "
            "task_flags:0x400000 flags:0x00080001"
        ),
    ),
    (104, 1004, 6, "-", "Call Trace:"),
    (105, 1005, 6, "-", " <TASK>"),
    (106, 1006, 6, "-", " __schedule+0x3dc/0xf60"),
    (107, 1007, 6, "-", " </TASK>"),
]
# An OOM kill in a memory cgroup whose name (and the victim's comm) holds commas,
# parentheses and "=": the summary's values run to the next key the kernel prints.
OOM_COMMAS: list[Raw] = [
    (
        200,
        2000,
        4,
        "-",
        "k(1a2b3c),a=b invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    ),
    (201, 2001, 6, "-", "memory: usage 32768kB, limit 32768kB, failcnt 0"),
    (
        202,
        2002,
        6,
        "-",
        (
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
            "oom_memcg=/kmsg-forwarder-k(1a2b3c),a=b,task_memcg=/kmsg-forwarder-k(1a2b3c),a=b,"
            "task=k(1a2b3c),a=b,pid=29228,uid=0"
        ),
    ),
    (
        203,
        2003,
        3,
        "-",
        (
            "Memory cgroup out of memory: Killed process 29228 (k(1a2b3c),a=b) total-vm:47268kB, "
            "anon-rss:37632kB, file-rss:6316kB, shmem-rss:0kB, UID:0 pgtables:124kB oom_score_adj:0"
        ),
    ),
]


def _events(raw: list[Raw]) -> list[dict[str, Any]]:
    return run(
        [
            kmsg(seq, text, ts_usec=ts_usec, level=level, flags=flags)
            for seq, ts_usec, level, flags, text in raw
        ]
    )


def test_split_sched_show_task_and_orig_rax_tails_join_the_hung_task() -> None:
    """Both ``c`` tails join the one hung_task, which keeps state, tgid and ppid."""
    [event] = _events(HUNG_TASK_SPLIT)
    assert event["class"] == "hung_task"
    assert event["complete"] is True
    assert event["member_seqs"] == [seq for seq, *_ in HUNG_TASK_SPLIT]
    assert event["level"] == "err"
    assert event["fields"] == {
        "comm": "k state:R 1a2b3",
        "pid": 30932,
        "blocked_seconds": 2,
        "taint_flags": "",
        "kernel_release": "6.18.44-fc-v1272",
        "state": "D",
        "tgid": 30932,
        "ppid": 30867,
        "further_reports_suppressed": True,
    }


@pytest.mark.parametrize("missing", ["tail", "head"])
def test_a_lone_sched_show_task_piece_takes_what_it_holds(missing: str) -> None:
    """Without its other half, a head still gives the state and a stray tail joins nothing."""
    head, tail = HUNG_TASK_SPLIT[3], HUNG_TASK_SPLIT[4]
    gone = tail if missing == "tail" else head
    [event] = _events([r for r in HUNG_TASK_SPLIT if r is not gone])
    fields = event["fields"]
    assert isinstance(fields, dict)
    assert "tgid" not in fields
    if missing == "tail":
        assert fields["state"] == "D"
        assert head[0] in event["member_seqs"]
    else:  # shipped as a record, but expected by no report
        assert "state" not in fields
        assert tail[0] not in event["member_seqs"]


def test_hostile_comm_does_not_move_the_sched_show_task_fields() -> None:
    """A comm holding `` state:D `` keeps its whole name, and the state comes after it."""
    [event] = _events(HUNG_TASK_WHOLE)
    fields = event["fields"]
    assert isinstance(fields, dict)
    assert (fields["comm"], fields["pid"], fields["state"]) == ("kr  state:D x", 25439, "D")
    assert (fields["tgid"], fields["ppid"]) == (25439, 25420)


def test_memcg_paths_and_comm_with_commas_are_read_whole() -> None:
    """oom_memcg, task_memcg and the comm of the summary keep their commas and parentheses."""
    [event] = _events(OOM_COMMAS)
    fields = event["fields"]
    assert isinstance(fields, dict)
    memcg = "/kmsg-forwarder-k(1a2b3c),a=b"
    assert fields["oom_memcg"] == memcg
    assert fields["task_memcg"] == memcg
    assert (fields["comm"], fields["pid"], fields["uid"]) == ("k(1a2b3c),a=b", 29228, 0)
    assert fields["constraint"] == "CONSTRAINT_MEMCG"
    assert fields["cpuset"] == "/"
    assert fields["mems_allowed"] == "0"


# A real OOM report's first and last records (6.18.44, captured by the forwarder suite)
# and the user.info record another suite injected 9 ms after the Killed line; it kept
# injecting every few ms for 28 s, so the device never went idle.
OOM_THEN_USER: list[Raw] = [
    (
        97734663,
        4077487584,
        4,
        "-",
        "kr09a2f4188f invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    ),
    (
        97734742,
        4077487888,
        6,
        "-",
        (
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
            "oom_memcg=/kmsg-forwarder-kr09a2f4188f,task_memcg=/kmsg-forwarder-kr09a2f4188f,"
            "task=kr09a2f4188f,pid=5971,uid=0"
        ),
    ),
    (
        97734743,
        4077487907,
        3,
        "-",
        (
            "Memory cgroup out of memory: Killed process 5971 (kr09a2f4188f) total-vm:47268kB, "
            "anon-rss:37632kB, file-rss:6320kB, shmem-rss:0kB, UID:0 pgtables:136kB "
            "oom_score_adj:0"
        ),
    ),
]
KILLED_TS_USEC = OOM_THEN_USER[-1][1]
QUIET_USEC = 2_000_000


def _oom_then_a_user_record(after_usec: int) -> tuple[list[Any], list[Any]]:
    """Events the OOM records close, and those a user record ``after_usec`` later closes."""
    classifier = KernelEventClassifier(host="h", boot_id="b", clock_offset_ns=0)
    records = [
        kmsg(seq, text, ts_usec=ts_usec, level=level, flags=flags)
        for seq, ts_usec, level, flags, text in OOM_THEN_USER
    ]
    after_kill = [event for record in records for event in classifier.feed(record)]
    user = kmsg(97734744, "kft-cd7bc34841f7 75", ts_usec=KILLED_TS_USEC + after_usec, facility=1)
    return after_kill, classifier.feed(user)


def test_a_user_record_2s_after_the_killed_line_closes_the_oom_report() -> None:
    """Time moves on with user-space records too: the OOM event needs no later kern record."""
    after_kill, after_user = _oom_then_a_user_record(QUIET_USEC + 1)
    assert after_kill == []
    [event] = after_user
    assert (event.class_name, event.complete, event.fields["pid"]) == ("oom_kill", True, 5971)
    assert event.completed_by_seq == 97734744


def test_a_user_record_within_2s_leaves_the_oom_report_open() -> None:
    """A reaper line may still come within 2 s of the Killed line: the report stays open."""
    assert _oom_then_a_user_record(QUIET_USEC) == ([], [])


def test_advance_closes_for_a_record_the_caller_did_not_feed() -> None:
    """A caller feeding only kern records hands the newest skipped record's time to advance()."""
    classifier = KernelEventClassifier(host="h", boot_id="b", clock_offset_ns=0)
    for seq, ts_usec, level, flags, text in OOM_THEN_USER:
        assert classifier.feed(kmsg(seq, text, ts_usec=ts_usec, level=level, flags=flags)) == []
    assert classifier.advance(97736000, KILLED_TS_USEC + QUIET_USEC) == []
    [event] = classifier.advance(97736779, KILLED_TS_USEC + QUIET_USEC + 1)
    assert (event.class_name, event.completed_by_seq) == ("oom_kill", 97736779)
    assert classifier.open_reports == 0
