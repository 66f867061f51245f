"""audit: kernel audit records printed to the log (SPEC.md section 3.19; kernel/audit.c).

kauditd prints ``audit: type=N audit(SECS.MSECS:SERIAL): key=value ...`` when no audit
daemon listens. Untrusted strings are quoted, or hex-encoded (unquoted) when they hold
a space, a quote or a control byte; both come out as plain text here.
"""

from __future__ import annotations

import re
from typing import Final

from forwarder.kernel_events.report import SingleReport
from forwarder.kernel_events.values import Fields
from forwarder.source.parser import Record

_AUDIT: Final = re.compile(
    r"audit: type=(?P<type>\d+) audit\((?P<time>\d+\.\d+):(?P<serial>\d+)\): (?P<body>.*)$"
)
_PAIR: Final = re.compile(r"([\w-]+)=(\"[^\"]*\"|\S*)")
# The same pairs, the quotes' inside and an unquoted value in groups of their own.
_PAIR_PARTS: Final = re.compile(r"([\w-]+)=(?:\"([^\"]*)\"|(\S*))")
_SELINUX: Final = re.compile(r"avc: +(?P<outcome>denied|granted)")
_HEX: Final = re.compile(r"(?:[0-9A-F]{2})+")
_UNTRUSTED: Final = frozenset(
    {"comm", "exe", "name", "path", "cwd", "proctitle", "cmd", "key", "ocomm", "dir", "file",
     "acct", "old", "new", "data", "root_dir", "watch"}
)  # fmt: skip
_SECCOMP_ACTIONS: Final = {
    0x00000000: "killed", 0x80000000: "killed", 0x00030000: "trapped", 0x00050000: "errno",
    0x7FC00000: "user_notif", 0x7FF00000: "traced", 0x7FFC0000: "logged", 0x7FFF0000: "allowed",
}  # fmt: skip


class Audit(SingleReport):
    """audit: one audit record."""

    class_name = "audit"


def audit_value(key: str, raw: str) -> str:
    """Unquote a value, or hex-decode an untrusted string the kernel hex-encoded."""
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        return raw[1:-1]
    if key in _UNTRUSTED and _HEX.fullmatch(raw):
        return bytes.fromhex(raw).decode("utf-8", "replace")
    return raw


def audit_pairs(body: str) -> dict[str, str]:
    """Every ``key=value`` of ``body``, each value as :func:`audit_value` gives it."""
    pairs = {}
    for key, quoted, bare in _PAIR_PARTS.findall(body):
        # An unquoted value is all of \S*; a quoted one only matches when it closes.
        pairs[key] = quoted if not bare else _plain(key, bare)
    return pairs


def audit_pairs_reference(body: str) -> dict[str, str]:
    """:func:`audit_pairs` the obvious way (for tests)."""
    return {key: audit_value(key, raw) for key, raw in _PAIR.findall(body)}


def _plain(key: str, raw: str) -> str:
    if key in _UNTRUSTED and _HEX.fullmatch(raw):
        return bytes.fromhex(raw).decode("utf-8", "replace")
    return raw


def detect_audit(record: Record, text: str) -> Audit | None:
    """An ``audit: type=... audit(...): ...`` record."""
    match = _AUDIT.match(text)
    if match is None:
        return None
    audit_type = int(match["type"])
    pairs = audit_pairs(match["body"])
    fields: Fields = {
        "audit_type": audit_type,
        "audit_time": match["time"],
        "audit_serial": int(match["serial"]),
    }
    selinux = _SELINUX.match(match["body"])
    if "apparmor" in pairs:
        fields.update(lsm="apparmor", outcome=pairs["apparmor"])
    elif selinux:
        fields.update(lsm="selinux", outcome=selinux["outcome"])
    elif audit_type == 1326 and "code" in pairs:
        fields.update(lsm="seccomp", outcome=seccomp_outcome(pairs["code"]))
    fields["fields"] = pairs
    return Audit(record, fields)


def seccomp_outcome(code: str) -> str:
    """The seccomp action of a SECCOMP record's ``code=`` (``killed``, ``errno``, ...)."""
    try:
        value = int(code, 16)
    except ValueError:
        return code
    if value == 0x80000000:
        return "killed"
    return _SECCOMP_ACTIONS.get(value & 0xFFFF0000 if value < 0x80000000 else value, code)
