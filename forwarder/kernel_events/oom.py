"""oom_kill: the OOM killer's report (SPEC.md section 3.1; mm/oom_kill.c, mm/memcontrol.c).

``<comm> invoked oom-killer: ...`` opens it; the stack, memcg usage and stats (or global
Mem-Info), the task table and the ``oom-kill:`` summary follow; ``<reason>: Killed
process ...`` completes it. oom.group kills and the reaper line join afterwards. A tail
(summary, Killed line, legacy ``Kill process ... or sacrifice child``) opens an
incomplete report when the start is gone from the ring.
"""

from __future__ import annotations

import re
from typing import Final

from forwarder.kernel_events.kubernetes import kubernetes_context
from forwarder.kernel_events.report import Verdict
from forwarder.kernel_events.stack import StackReport
from forwarder.kernel_events.values import Fields, apply_match
from forwarder.source.parser import Record

_INVOKED: Final = re.compile(
    r"(?P<trigger_comm>.+) invoked oom-killer: gfp_mask=(?P<gfp_mask>0x[0-9a-f]+)"
    r"\((?P<gfp_flags>[^)]*)\),(?: nodemask=(?P<nodemask>[^,]*),)? order=(?P<order>-?\d+), "
    r"oom_score_adj=(?P<trigger_oom_score_adj>-?\d+)"
)
_MEMCG_USAGE: Final = re.compile(
    r"memory: usage (?P<memcg_usage_kb>\d+)kB, limit (?P<memcg_limit_kb>\d+)kB, "
    r"failcnt (?P<memcg_failcnt>\d+)"
)
# Cgroup paths and the comm may hold commas (any byte but "/" and NUL): each value runs to
# the next key the kernel prints, and the comm to the ",pid=N,uid=N" that ends the line.
_SUMMARY: Final = re.compile(
    r"oom-kill:constraint=(?P<constraint>\w+),nodemask=(?P<nodemask>[^,]*(?:,[\d-]+)*)"
    r"(?:,cpuset=(?P<cpuset>.*?),mems_allowed=(?P<mems_allowed>[^,]*(?:,[\d-]+)*))?"
    r"(?:,oom_memcg=(?P<oom_memcg>.*?)|,global_oom)(?:,task_memcg=(?P<task_memcg>.*?))?"
    r",task=(?P<comm>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)$"
)
_KILLED: Final = re.compile(
    r"(?:(?P<kill_reason>.+?): )?Killed process (?P<pid>\d+) \((?P<comm>.*)\) "
    r"total-vm:(?P<total_vm_kb>\d+)kB, anon-rss:(?P<anon_rss_kb>\d+)kB, "
    r"file-rss:(?P<file_rss_kb>\d+)kB, shmem-rss:(?P<shmem_rss_kb>\d+)kB"
    r"(?:, UID:(?P<uid>\d+) pgtables:(?P<pgtables_kb>\d+)kB "
    r"oom_score_adj:(?P<oom_score_adj>-?\d+))?"
)
_LEGACY_KILL: Final = re.compile(
    r"(?P<kill_reason>.+?): Kill process (?P<pid>\d+) \((?P<comm>.*)\) score (?P<score>\d+) "
    r"or sacrifice child"
)
_GROUP: Final = re.compile(
    r"Tasks in (?P<cgroup>.+) are going to be killed due to memory\.oom\.group"
)
_REAPED: Final = re.compile(r"oom_reaper: (?:reaped process |unable to reap pid:)(?P<pid>\d+)")
_STATS_HEADER: Final = "Memory cgroup stats for "
_STAT_LINE: Final = re.compile(r"[a-z_]+ \d+$")
_OOM_LINE: Final = re.compile(
    r"memory: usage|memory\+swap: usage|swap: usage|kmem: usage|Memory cgroup stats for |Mem-Info:"
    r"|active_anon:|Node \d+ |lowmem_reserve\[\]:|\d+ total pagecache pages|\d+ pages |Swap cache "
    r"|Free swap |Total swap |Tasks state \(memory values in pages\):|\[  pid  \]|\[ *\d+\] "
    r"|Unreclaimable slab info:|Name +Used +Total|\S+ \d+KB \d+KB$|\d+ pages in swap cache"
)
_SCOPES: Final = {
    "CONSTRAINT_NONE": "global",
    "CONSTRAINT_MEMCG": "memcg",
    "CONSTRAINT_CPUSET": "cpuset",
    "CONSTRAINT_MEMORY_POLICY": "mempolicy",
}
_INT: Final = dict.fromkeys(
    [
        "order",
        "trigger_oom_score_adj",
        "memcg_usage_kb",
        "memcg_limit_kb",
        "memcg_failcnt",
        "pid",
        "uid",
        "total_vm_kb",
        "anon_rss_kb",
        "file_rss_kb",
        "shmem_rss_kb",
        "pgtables_kb",
        "oom_score_adj",
        "score",
    ],
    int,
)


class OomReport(StackReport):
    """oom_kill: one OOM killer invocation, from ``invoked oom-killer`` to the kill."""

    class_name = "oom_kill"
    cpu_line_is_trigger = True

    def __init__(self, record: Record, fields: Fields, *, started: bool) -> None:
        super().__init__(record, fields, started=started)
        self.in_stats = False
        self.legacy_kill = False

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Members by the OOM grammar; the Killed line meets the end condition."""
        del record, previous_text
        if self.end_met:
            return self._offer_after_kill(text)
        if self._take_oom_line(text):
            return Verdict.JOIN
        if self.in_stats and _STAT_LINE.match(text):
            return Verdict.JOIN
        return Verdict.JOIN if self.take_stack_line(text) else Verdict.REJECT

    def finish(self) -> None:
        """Derive ``scope`` and the Kubernetes context of the victim's memcg."""
        fields = self.fields
        scope = _SCOPES.get(fields.get("constraint", ""))
        if scope is None and "kill_reason" in fields:
            scope = "memcg" if fields["kill_reason"].startswith("Memory cgroup") else "global"
        if scope is not None:
            fields["scope"] = scope
        context = kubernetes_context(fields.get("task_memcg") or fields.get("oom_memcg") or "")
        if context is not None:
            fields["kubernetes"] = context

    def _take_oom_line(self, text: str) -> bool:
        for pattern in (_MEMCG_USAGE, _SUMMARY):
            match = pattern.match(text)
            if match:
                apply_match(self.fields, match, _INT)
                return True
        match = _KILLED.match(text)
        if match:
            self._take_kill(match)
            return True
        if _OOM_LINE.match(text):
            self.in_stats = text.startswith(_STATS_HEADER)
            return True
        return False

    def _take_kill(self, match: re.Match[str]) -> None:
        fields = self.fields
        for name, value in match.groupdict().items():
            if value is not None and (name != "kill_reason" or not self.legacy_kill):
                fields[name] = int(value) if name in _INT else value
        self.end_met = True

    def _offer_after_kill(self, text: str) -> Verdict:
        fields = self.fields
        if _GROUP.match(text):
            fields["oom_group"] = True
            fields.setdefault("group_kills", 0)
            return Verdict.JOIN
        if fields.get("oom_group") and _KILLED.match(text):
            fields["group_kills"] += 1
            return Verdict.JOIN
        match = _REAPED.match(text)
        if match and int(match["pid"]) == fields.get("pid"):
            fields["reaped"] = text.startswith("oom_reaper: reaped")
            return Verdict.JOIN
        return Verdict.REJECT


def detect_oom(record: Record, text: str) -> OomReport | None:
    """Open an oom_kill at ``invoked oom-killer`` or, incomplete, at a tail anchor."""
    fields: Fields = {}
    match = _INVOKED.match(text)
    if match:
        apply_match(fields, match, _INT)
        fields["gfp_flags"] = match["gfp_flags"].split("|") if match["gfp_flags"] else []
        return OomReport(record, fields, started=True)
    match = _LEGACY_KILL.match(text)
    if match:
        apply_match(fields, match, _INT)
        report = OomReport(record, fields, started=False)
        report.legacy_kill = True
        return report
    report = OomReport(record, fields, started=False)
    return report if report._take_oom_line(text) and "pid" in fields else None  # noqa: SLF001
