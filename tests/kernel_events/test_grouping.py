"""Grouping under adversarial input: interleaving, truncation, spoofing, limits."""

from __future__ import annotations

import re

import pytest

from forwarder.errors import ConfigError
from forwarder.kernel_events import KernelEventClassifier, UserRule
from forwarder.kernel_events.config import KernelEventsConfig
from forwarder.options import parse_table
from tests.kernel_events.support import kmsg, members, run, warning_lines


def test_reports_interleaved_line_by_line_are_separated_by_caller_id() -> None:
    """Two WARNINGs printed at once by two callers come out as two whole reports."""
    first, second = warning_lines(0, 100, 10), warning_lines(1, 200, 20)
    records = []
    seq = 1
    for a, b in zip(first, second, strict=True):
        records.append(kmsg(seq, a, caller="T100"))
        records.append(kmsg(seq + 1, b, caller="T200"))
        seq += 2
    events = run(records)
    assert sorted(e["fields"]["pid"] for e in events) == [100, 200]
    for event in events:
        assert event["class"] == "kernel_warning"
        assert event["complete"] is True
        assert event["record_count"] == len(first)
        odd = event["fields"]["pid"] == 100
        assert all((seq % 2 == 1) == odd for seq in members(event))


def test_truncated_report_is_flushed_incomplete() -> None:
    """A WARNING cut off before its end trace gives one event with complete false."""
    lines = warning_lines(0, 1, 5)[:7]
    events = run([kmsg(i + 1, text) for i, text in enumerate(lines)])
    assert [(e["class"], e["complete"], e["record_count"]) for e in events] == [
        ("kernel_warning", False, 7)
    ]


def test_quiet_gap_of_more_than_two_seconds_ends_a_report() -> None:
    """Frames printed more than 2 s of ts_usec after the report do not join it."""
    lines = warning_lines(0, 1, 5)
    records = [kmsg(i + 1, text, ts_usec=1000 + i) for i, text in enumerate(lines[:6])]
    records += [kmsg(20 + i, text, ts_usec=5_000_000 + i) for i, text in enumerate(lines[6:])]
    events = run(records)
    assert [(e["last_seq"], e["complete"]) for e in events] == [(6, False)]


def test_two_hundred_records_without_a_member_end_a_report() -> None:
    """An open report closes after 200 records that are not its members."""
    records = [kmsg(1, "------------[ cut here ]------------")]
    records += [kmsg(2 + i, f"unrelated line {i}", level=6) for i in range(200)]
    records.append(kmsg(300, "WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2"))
    events = run(records)
    assert [(e["first_seq"], e["last_seq"]) for e in events] == [(1, 1), (300, 300)]


def test_user_written_lines_never_classify_and_never_join() -> None:
    """Lines injected by user-facility writes neither open reports nor join kernel ones."""
    lines = warning_lines(0, 1, 5)
    records = [kmsg(1, lines[0]), kmsg(2, lines[1])]
    records.append(kmsg(3, "---[ end trace 0000000000000000 ]---", facility=1))
    records.append(kmsg(4, "Out of memory: Killed process 1 (init) total-vm:1kB, anon-rss:1kB, "
                           "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0",
                        facility=1, level=3))  # fmt: skip
    records.append(kmsg(5, "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [x:1]", facility=3))
    records.append(kmsg(6, "x[1]: segfault at 0 ip 0 sp 0 error 4", facility=1, level=6))
    events = run(records)
    assert [(e["class"], members(e), e["complete"]) for e in events] == [
        ("kernel_warning", [1, 2], False)
    ]


def test_kernel_bug_at_takes_its_cut_here_line() -> None:
    """``cut here`` right before ``kernel BUG at`` is the oops's first member, not a warning."""
    records = [
        kmsg(1, "------------[ cut here ]------------"),
        kmsg(2, "kernel BUG at mm/slub.c:123!"),
        kmsg(3, "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"),
        kmsg(4, "---[ end trace 0000000000000000 ]---"),
    ]
    events = run(records)
    assert [(e["class"], e["first_seq"], e["last_seq"]) for e in events] == [("kernel_oops", 1, 4)]
    assert events[0]["fields"]["cause"] == "bug"
    assert events[0]["fields"]["bug_line"] == 123


def test_continuation_fragment_with_two_candidates_is_not_guessed() -> None:
    """A ``c`` fragment two open segfaults could take joins neither and is counted."""
    classifier = KernelEventClassifier(host="h", boot_id="b", clock_offset_ns=0)
    closed = classifier.feed(kmsg(1, "a[1]: segfault at 0 ip 1 sp 2 error 4", level=6))
    closed += classifier.feed(kmsg(2, "b[2]: segfault at 0 ip 1 sp 2 error 6", level=6))
    closed += classifier.feed(kmsg(3, " in libc.so.6[7f00+1000]", level=6, flags="c"))
    events = [e.to_dict() for e in closed + classifier.flush()]
    faults = [e for e in events if e["class"] == "user_fault"]
    assert len(faults) == 2
    assert all("vma_file" not in e["fields"] for e in faults)
    assert classifier.ambiguous_fragments == 1


def test_new_start_of_the_same_class_closes_the_open_report() -> None:
    """A second hung-task report closes the first one, both come out."""
    records = [
        kmsg(1, "INFO: task a:1 blocked for more than 5 seconds.", level=3),
        kmsg(2, "Call Trace:", level=6),
        kmsg(3, "INFO: task b:2 blocked for more than 5 seconds.", level=3),
    ]
    events = run(records)
    assert [(e["fields"]["comm"], e["first_seq"], e["last_seq"]) for e in events] == [
        ("a", 1, 2),
        ("b", 3, 3),
    ]


def test_idle_flush_closes_reports_after_two_seconds_of_wall_time() -> None:
    """flush_idle closes an open report once no member came for 2 s of wall time."""
    now = [100.0]
    classifier = KernelEventClassifier(
        host="h", boot_id="b", clock_offset_ns=0, clock=lambda: now[0]
    )
    classifier.feed(kmsg(1, "------------[ cut here ]------------"))
    assert classifier.flush_idle(101.0) == []
    events = classifier.flush_idle(102.0)
    assert [e.first_seq for e in events] == [1]
    assert classifier.open_reports == 0


def test_event_envelope_and_identity() -> None:
    """The envelope carries id, host, boot, timestamp of the first member, worst level."""
    classifier = KernelEventClassifier(host="node-7", boot_id="boot", clock_offset_ns=10**18)
    classifier.feed(kmsg(41, "x[9]: segfault at 0 ip 1 sp 2 error 4", level=6, ts_usec=5))
    (event,) = [e.to_dict() for e in classifier.flush()]
    assert event["id"] == "boot-41-user_fault"
    assert event["host"] == "node-7"
    assert event["@timestamp"] == "2001-09-09T01:46:40.000005Z"
    assert event["level"] == "info"
    assert "member_seqs" not in event


def test_disabled_classes_give_no_events() -> None:
    """A disabled class is neither opened nor emitted."""
    record = kmsg(1, "nf_conntrack: nf_conntrack: table full, dropping packet")
    assert run([record], disabled_classes=["conntrack_full"]) == []
    assert [e["class"] for e in run([record])] == ["conntrack_full"]


def test_user_rules_fire_on_their_facility_and_level_only() -> None:
    """A user rule fires on kern records at or above its level; named groups become fields."""
    config = parse_table(
        {"rules": [{"class": "nfs_timeout", "regex": r"nfs: server (?P<server>\S+) not",
                    "max_level": "warning"}]}, KernelEventsConfig
    )  # fmt: skip
    text = "nfs: server filer1 not responding, still trying"
    records = [kmsg(1, text, level=4), kmsg(2, text, level=6), kmsg(3, text, facility=1)]
    events = run(records, rules=config.compiled_rules())
    assert [(e["class"], e["first_seq"], e["fields"]) for e in events] == [
        ("nfs_timeout", 1, {"server": "filer1"})
    ]


def test_user_rule_for_any_facility() -> None:
    """``facility = "any"`` lets a rule see user-space records too."""
    rule = UserRule("app_crash", re.compile(r"crashed"), facility_code=None)
    events = run([kmsg(1, "app crashed", facility=1)], rules=[rule])
    assert [e["class"] for e in events] == ["app_crash"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rules": [{"class": "x", "regex": "(unclosed"}]}, "invalid regex '(unclosed'"),
        ({"rules": [{"class": "oom_kill", "regex": "a"}]}, "is built in"),
        ({"rules": [{"class": "x", "regex": "a", "facility": "nope"}]}, "unknown facility"),
        ({"rules": [{"class": "x", "regex": "a", "max_level": "loud"}]}, "unknown log level"),
        ({"disabled_classes": ["oom_kil"]}, "unknown classes ['oom_kil']"),
        ({"enable": True}, "enable: unknown key"),
    ],
)
def test_config_errors_are_clear(config: dict[str, object], message: str) -> None:
    """A broken ``[kernel_events]`` table is refused with a message naming the problem."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_table(config, KernelEventsConfig)


def test_config_defaults() -> None:
    """Kernel events are on by default with every class and no rules."""
    config = KernelEventsConfig()
    assert config.enabled is True
    assert config.disabled_classes == ()
    assert config.compiled_rules() == ()
