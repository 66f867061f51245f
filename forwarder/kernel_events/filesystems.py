"""fs_error and fs_readonly: ext4, jbd2, XFS, Btrfs and FAT (SPEC.md sections 3.13, 3.14).

Formats: fs/ext4/super.c, fs/jbd2/journal.c, fs/xfs/xfs_fsops.c and xfs_error.c,
fs/btrfs/messages.c (super.c before 6.2), fs/fat/misc.c. XFS shutdowns and corruption
reports are small groups keyed by ``XFS (dev)``; everything else is one record.
"""

from __future__ import annotations

import re
from typing import Any, Final

from forwarder.kernel_events.report import Report, SingleReport, Verdict
from forwarder.kernel_events.values import Fields, apply_match, hex_address
from forwarder.source.parser import Record

_EXT4: Final = re.compile(
    r"EXT4-fs (?P<kind>error|warning) \(device (?P<device>[^)]+)\)(?::| in) (?P<function>\w+):"
    r"(?P<line>\d+): (?:inode #(?P<inode>\d+): )?(?:block (?P<block>\d+): )?"
    r"(?:comm (?P<comm>.+?): )?(?:path (?P<path>.+?): )?(?P<message>.*)$"
)
_JBD2: Final = re.compile(r"Aborting journal on device (?P<device>\S+)\.$")
_EXT4_RO: Final = re.compile(r"EXT4-fs \((?P<device>[^)]+)\): Remounting filesystem read-only")
_FAT: Final = re.compile(
    r"FAT-fs \((?P<device>[^)]+)\): (?P<what>error, |Filesystem has been set read-only)"
    r"(?P<message>.*)$"
)
_BTRFS_ERROR: Final = re.compile(
    r"BTRFS: error \(device (?P<device>[^\s)]+)(?::? state (?P<state>\w+))?\) in "
    r"(?P<function>\w+):(?P<line>\d+): errno=(?P<errno>-?\d+) (?P<errstr>.+?)"
    r"(?: \((?P<detail>.*)\))?$"
)
_BTRFS: Final = re.compile(
    r"BTRFS \w+ \(device (?P<device>[^\s)]+)(?::? state (?P<state>\w+))?\): (?P<message>.*)$"
)
_BTRFS_FORMS: Final = (
    (re.compile(r"bdev (?P<bdev>\S+) errs: wr (?P<wr>\d+), rd (?P<rd>\d+), flush (?P<flush>\d+),"
                r" corrupt (?P<corrupt>\d+), gen (?P<gen>\d+)"), "dev_stats"),
    (re.compile(r"csum failed root (?P<root>-?\d+) ino (?P<inode>\d+) off (?P<off>\d+) csum "
                r"(?P<csum>0x[0-9a-f]+) expected csum (?P<expected_csum>0x[0-9a-f]+) mirror "
                r"(?P<mirror>\d+)"), "csum_failed"),
    (re.compile(r"Transaction aborted \(error (?P<errno>-?\d+)\)"), "error"),
    (re.compile(r"block=(?P<block>\d+) write time tree block corruption detected"), "corruption"),
)  # fmt: skip
_XFS: Final = re.compile(r"XFS \((?P<device>[^)]+)\): (?P<rest>.*)$")
_XFS_SHUTDOWN: Final = re.compile(
    r"(?P<reason>.+?) \((?P<shutdown_flags>0x[0-9a-f]+)\) detected at (?P<at_function>[^\s+]+)"
    r"\+0x[0-9a-f]+/0x[0-9a-f]+ \((?P<source_file>[^:]+):(?P<source_line>\d+)\)\.  "
    r"Shutting down filesystem"
)
_XFS_LEGACY_CALL: Final = re.compile(
    r"xfs_do_force_shutdown\((?P<shutdown_flags>0x[0-9a-f]+)\) called from line "
    r"(?P<source_line>\d+) of file (?P<source_file>\S+?)\.  ?Return address"
)
_XFS_LEGACY_WHY: Final = re.compile(
    r"(?P<reason>.+?)(?: [Dd]etected)?\.  ?Shutting down filesystem"
)
_XFS_CORRUPTION: Final = re.compile(
    r"Metadata corruption detected at (?P<at_function>[^\s+]+)\+0x[0-9a-f]+/0x[0-9a-f]+"
    r"(?: \[\w+\])?, (?:(?P<buffer_type>\S+) block (?P<daddr>0x[0-9a-f]+)(?: (?P<verifier>.+))?"
    r"|inode (?P<inode>0x[0-9a-f]+)(?: (?P<inode_verifier>.+))?)$"
)
_XFS_IO: Final = re.compile(
    r"metadata I/O error in \"(?P<function>[^\"+]+)[^\"]*\" at daddr (?P<daddr>0x[0-9a-f]+) len "
    r"(?P<len>\d+) error (?P<error>\d+)"
)
_XFS_DUMP: Final = re.compile(r"First (?P<dump_bytes>\d+) bytes of corrupted metadata buffer:")
_XFS_ROW: Final = re.compile(r"[0-9a-f]{8}: ")
_INT: Final[dict[str, Any]] = {
    **dict.fromkeys(
        [
            "line",
            "inode",
            "block",
            "errno",
            "source_line",
            "len",
            "error",
            "dump_bytes",
            "root",
            "off",
            "mirror",
            "wr",
            "rd",
            "flush",
            "corrupt",
            "gen",
        ],
        int,
    ),
    "daddr": hex_address,
    "inode": lambda value: int(value, 16) if value.startswith("0x") else int(value),
}


class FsErrorReport(Report):
    """fs_error: one filesystem error (single, or an XFS group)."""

    class_name = "fs_error"


class FsReadonlyReport(SingleReport):
    """fs_readonly: a filesystem turned itself read-only."""

    class_name = "fs_readonly"


class XfsGroup(FsErrorReport):
    """An XFS shutdown (until ``Please unmount``) or corruption report (until its hexdump)."""

    def __init__(self, record: Record, fields: Fields, device: str) -> None:
        super().__init__(record, fields, key=device)
        self.rows_left = 0

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """The same device's shutdown or corruption lines."""
        del record, previous_text
        match = _XFS.match(text)
        if match is None or match["device"] != self.key:
            return Verdict.REJECT
        rest = match["rest"]
        if self.fields["kind"] == "shutdown":
            return self._offer_shutdown(rest)
        dump = _XFS_DUMP.match(rest)
        if dump:
            self.fields["dump_bytes"] = int(dump["dump_bytes"])
            self.rows_left = -(-int(dump["dump_bytes"]) // 16)
            return Verdict.JOIN
        if self.rows_left and _XFS_ROW.match(rest):
            self.rows_left -= 1
            return Verdict.JOIN if self.rows_left else Verdict.DONE
        return Verdict.JOIN if rest.startswith("Unmount and run xfs_repair") else Verdict.REJECT

    def _offer_shutdown(self, rest: str) -> Verdict:
        if rest.startswith("Please unmount the filesystem"):
            return Verdict.DONE
        for pattern in (_XFS_SHUTDOWN, _XFS_LEGACY_WHY):
            match = pattern.match(rest)
            if match and "reason" not in self.fields:
                apply_match(self.fields, match, _INT)
                return Verdict.JOIN
        return Verdict.REJECT


def detect_fs_event(record: Record, text: str) -> Report | None:
    """An ext4/jbd2/Btrfs/FAT/XFS error or read-only line."""
    if text.startswith("XFS ("):
        return _detect_xfs(record, text)
    if text.startswith("BTRFS"):
        return _detect_btrfs(record, text)
    if text.startswith("FAT-fs ("):
        return _detect_fat(record, text)
    return _detect_ext4(record, text)


def _detect_ext4(record: Record, text: str) -> Report | None:
    fields: Fields = {}
    match = _EXT4.match(text)
    if match:
        apply_match(fields, match, _INT)
        fields = {"fs": "ext4", **fields}
        return FsErrorReport(record, fields, done=True)
    match = _JBD2.match(text)
    if match:
        return FsErrorReport(
            record, {"fs": "jbd2", "kind": "journal_abort", **match.groupdict()}, done=True
        )
    match = _EXT4_RO.match(text)
    if match:
        return FsReadonlyReport(record, {"fs": "ext4", "device": match["device"]})
    return None


def _detect_fat(record: Record, text: str) -> Report | None:
    match = _FAT.match(text)
    if match is None:
        return None
    if match["what"] == "error, ":
        fields = {
            "fs": "fat",
            "kind": "error",
            "device": match["device"],
            "message": match["message"],
        }
        return FsErrorReport(record, fields, done=True)
    return FsReadonlyReport(record, {"fs": "fat", "device": match["device"]})


def _detect_btrfs(record: Record, text: str) -> Report | None:
    fields: Fields = {"fs": "btrfs"}
    match = _BTRFS_ERROR.match(text)
    if match:
        apply_match(fields, match, _INT)
        return FsErrorReport(record, {"kind": "error", **fields}, done=True)
    match = _BTRFS.match(text)
    if match is None:
        return None
    fields["device"] = match["device"]
    if match["state"]:
        fields["state"] = match["state"]
    if match["message"] == "forced readonly":
        return FsReadonlyReport(record, fields)
    for pattern, kind in _BTRFS_FORMS:
        form = pattern.match(match["message"])
        if form:
            apply_match(fields, form, _INT)
            return FsErrorReport(record, {"kind": kind, **fields}, done=True)
    return None


def _detect_xfs(record: Record, text: str) -> Report | None:
    match = _XFS.match(text)
    if match is None:
        return None
    device, rest = match["device"], match["rest"]
    fields: Fields = {"fs": "xfs", "device": device}
    if rest.startswith("User initiated shutdown received"):
        return XfsGroup(record, {**fields, "kind": "shutdown", "user_initiated": True}, device)
    for pattern in (_XFS_SHUTDOWN, _XFS_LEGACY_CALL):
        form = pattern.match(rest)
        if form:
            apply_match(fields, form, _INT)
            return XfsGroup(record, {"kind": "shutdown", **fields}, device)
    form = _XFS_CORRUPTION.match(rest)
    if form:
        apply_match(fields, form, _INT)
        return XfsGroup(record, {"kind": "corruption", **fields}, device)
    form = _XFS_IO.match(rest)
    if form:
        apply_match(fields, form, _INT)
        return FsErrorReport(record, {"kind": "metadata_io_error", **fields}, done=True)
    return None
