"""The 22 built-in classes and the detectors that open their reports.

Each detector is guarded by the prefixes or substrings its start records carry (SPEC.md
1.2c: anchor on known prefixes), so a record that can start nothing costs a dict lookup
and a few substring tests before any regex runs.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Final

from forwarder.kernel_events.audit import detect_audit
from forwarder.kernel_events.crashes import (
    CUT_HERE,
    detect_bug,
    detect_oops,
    detect_panic,
    detect_warning,
)
from forwarder.kernel_events.devices import detect_kernel_taint, detect_usb_device
from forwarder.kernel_events.filesystems import detect_fs_event
from forwarder.kernel_events.hardware import detect_hw_event
from forwarder.kernel_events.network import (
    detect_conntrack_full,
    detect_link_state,
    detect_netfilter_log,
)
from forwarder.kernel_events.oom import detect_oom
from forwarder.kernel_events.report import Report
from forwarder.kernel_events.stalls import detect_hung_task, detect_lockup, detect_rcu_stall
from forwarder.kernel_events.storage import detect_block_io_error, detect_storage_error
from forwarder.kernel_events.user_fault import detect_user_fault
from forwarder.source.parser import Record

Detector = Callable[[Record, str], Report | None]

CLASSES: Final = (
    "oom_kill", "user_fault", "kernel_oops", "kernel_bug", "kernel_warning", "soft_lockup",
    "hard_lockup", "hung_task", "rcu_stall", "kernel_panic", "block_io_error",
    "storage_error", "fs_error", "fs_readonly", "hw_error", "thermal_throttle",
    "netfilter_log", "conntrack_full", "audit", "link_state", "usb_device", "kernel_taint",
)  # fmt: skip

PREFIX_DETECTORS: Final[tuple[tuple[tuple[str, ...], Detector], ...]] = (
    (("BUG: kernel NULL", "BUG: unable to handle", "kernel BUG at ", "Oops: ",
      "general protection fault", "invalid opcode: ", "divide error: ", "stack segment: ",
      "double fault: ", "alignment check: ", "bounds: ", "int3: "), detect_oops),
    (("watchdog: ", "NMI watchdog: ", "BUG: soft lockup"), detect_lockup),
    (("BUG: ",), detect_bug),
    ((CUT_HERE, "WARNING: "), detect_warning),
    (("INFO: task ",), detect_hung_task),
    (("rcu: INFO: ", "INFO: rcu"), detect_rcu_stall),
    (("Kernel panic - not syncing: ",), detect_panic),
    (("oom-kill:", "Killed process "), detect_oom),
    (("traps: ",), detect_user_fault),
    (("Buffer I/O error",), detect_block_io_error),
    (("sd ", "sr ", "st ", "ses ", "sg ", "ata", "nvme"), detect_storage_error),
    (("EXT4-fs", "Aborting journal", "XFS (", "BTRFS", "FAT-fs ("), detect_fs_event),
    (("mce: ", "EDAC ", "{", "CPU"), detect_hw_event),
    (("nf_conntrack: ",), detect_conntrack_full),
    (("audit: ",), detect_audit),
    (("usb ",), detect_usb_device),
)  # fmt: skip
SUBSTRING_DETECTORS: Final[tuple[tuple[str, Detector], ...]] = (
    ("oom-killer", detect_oom),
    # What detect_oom can open without a prefix: a Killed line ("Killed process ... shmem-rss:")
    # after a reason, or the legacy "...: Kill process N (comm) score N or sacrifice child".
    ("shmem-rss:", detect_oom),
    (" or sacrifice child", detect_oom),
    ("segfault", detect_user_fault),
    (" error, dev ", detect_block_io_error),
    ("taint", detect_kernel_taint),
    ("staging directory", detect_kernel_taint),
    ("Link", detect_link_state),
    (" OUT=", detect_netfilter_log),
)


def _index_by_first_character() -> dict[str, tuple[tuple[tuple[str, ...], Detector], ...]]:
    index: dict[str, list[tuple[tuple[str, ...], Detector]]] = {}
    for prefixes, detector in PREFIX_DETECTORS:
        for first in sorted({prefix[0] for prefix in prefixes}):
            own = tuple(prefix for prefix in prefixes if prefix[0] == first)
            index.setdefault(first, []).append((own, detector))
    return {first: tuple(entries) for first, entries in index.items()}


_BY_FIRST_CHARACTER: Final = _index_by_first_character()


def detect_reference(record: Record, text: str) -> Report | None:
    """The slow, obvious :func:`detect`: every detector in turn, no guard (for tests)."""
    for _, detector in PREFIX_DETECTORS:
        report = detector(record, text)
        if report is not None:
            return report
    for _, detector in SUBSTRING_DETECTORS:
        report = detector(record, text)
        if report is not None:
            return report
    return None


def detect(record: Record, text: str) -> Report | None:
    """The report ``record`` opens, or None.

    The no-match path is one dict lookup on the first character, a ``startswith`` or two
    and a few substring tests.
    """
    if text:
        for prefixes, detector in _BY_FIRST_CHARACTER.get(text[0], ()):
            if text.startswith(prefixes):
                report = detector(record, text)
                if report is not None:
                    return report
    for substring, detector in SUBSTRING_DETECTORS:
        if substring in text:
            report = detector(record, text)
            if report is not None:
                return report
    return None


# Prefixes that common records share without opening anything (ext4 mounts, USB product
# lines), narrowed to what their detector can open: detect_fs_event's ext4 forms, and
# detect_usb_device's new-device and disconnect lines.
_NARROWED: Final = {
    "EXT4-fs": rb"EXT4-fs (?:error|warning) |EXT4-fs \([^)]*\): Remounting",
    "usb ": rb"usb \d+-[\d.]+: (?:new |USB disconnect)",
}


def _start_pattern() -> re.Pattern[bytes]:
    """``;`` (the end of the header) and a start prefix.

    The pattern begins with a literal, so ``re`` skips from one ``;`` to the next.
    """
    prefixes = sorted({p for prefixes, _ in PREFIX_DETECTORS for p in prefixes}, key=len)
    starts = [_NARROWED.get(p) or re.escape(p.encode()) for p in prefixes]
    return re.compile(b";(?:" + b"|".join(starts) + b")")


def _text_ends_with_space(raw: bytes) -> bool:
    """Whether the raw record's text ends with a space (the kernel never escapes one)."""
    start = raw.find(b";") + 1
    end = raw.find(b"\n", start)
    return raw.endswith(b" ", start, len(raw) if end < 0 else end)


_STARTS: Final = _start_pattern()
_SUBSTRINGS: Final = tuple(sorted({substring.encode() for substring, _ in SUBSTRING_DETECTORS}))
# What a substring's detector also needs of the raw record (a LOG line ends with a space).
_RAW_CHECKS: Final = {b" OUT=": _text_ends_with_space}


def might_open(raw: bytes) -> bool:
    """Whether the raw record ``raw`` could open a report: False means :func:`detect` is None.

    Searched in the raw bytes, before any parsing: every start prefix and substring is
    printable ASCII without a backslash, which the kernel never escapes, so it is in the
    raw text whenever it is in the unescaped one (the converse may fail: that only costs a
    parse). The prefixes are anchored on the ``;`` that ends the header. A netfilter LOG
    line must also end with a space, as its detector requires.
    """
    if _STARTS.search(raw) is not None:
        return True
    for substring in _SUBSTRINGS:
        if substring in raw:
            check = _RAW_CHECKS.get(substring)
            if check is None or check(raw):
                return True
    return False


def might_open_at(raws: Sequence[bytes]) -> set[int]:
    """The indices of ``raws`` that :func:`might_open`, searched in one joined buffer.

    One regex pass for the prefixes and one ``bytes.find`` pass per substring, all in C.
    A match across two records only costs a parse; none inside one record is missed.
    """
    joined = b"".join(raws)
    ends = list(itertools.accumulate(map(len, raws)))
    found = {bisect.bisect_right(ends, match.start()) for match in _STARTS.finditer(joined)}
    find = joined.find
    for substring in _SUBSTRINGS:
        check = _RAW_CHECKS.get(substring)
        at = find(substring)
        while at != -1:
            index = bisect.bisect_right(ends, at)
            if check is None or check(raws[index]):
                found.add(index)
            at = find(substring, ends[index])
    return found
