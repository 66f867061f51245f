"""block_io_error and storage_error: block layer, SCSI, ATA and NVMe (SPEC.md 3.11, 3.12).

Formats: block/blk-mq.c ``blk_print_req_error`` (blk-core.c ``blk_update_request`` before
6.1), fs/buffer.c, drivers/scsi/scsi_logging.c and scsi_lib.c, drivers/ata/libata-eh.c,
drivers/nvme/host/pci.c and core.c.
"""

from __future__ import annotations

import re
from typing import Any, Final

from forwarder.kernel_events.report import Report, SingleReport, Verdict
from forwarder.kernel_events.values import Fields, apply_match, hex_int
from forwarder.source.parser import Record

_BLK: Final = re.compile(
    r"(?:(?P<caller>\w+): )?(?P<status>[\w/ ]+?) error, dev (?P<device>[^\s,]+), sector "
    r"(?P<sector>\d+)(?: op 0x(?P<op_code>[0-9a-f]+):\((?P<op>[^)]*)\) flags (?P<flags>0x[0-9a-f]+)"
    r" phys_seg (?P<phys_seg>\d+) prio class (?P<prio_class>\d+)"
    r"| flags (?P<legacy_flags>[0-9a-f]+))?$"
)
_BUFFER: Final = re.compile(
    r"Buffer I/O error on dev (?P<device>\S+?), logical block (?P<logical_block>\d+)"
    r"(?:, (?P<detail>.+))?$"
)
_SCSI: Final = re.compile(
    r"(?:sd|sr|st|ses|sg) (?P<hctl>\d+:\d+:\d+:\d+): \[(?P<device>\w+)\] (?:tag#(?P<tag>\d+) )?"
    r"(?P<rest>.*)$"
)
_SCSI_FAILED: Final = re.compile(
    r"FAILED Result: hostbyte=(?P<hostbyte>\S+) driverbyte=(?P<driverbyte>\S+)"
    r"(?: cmd_age=(?P<cmd_age_s>\d+)s)?"
)
_SCSI_MEMBERS: Final = (
    re.compile(r"Sense Key : (?P<sense_key>.+?) \[\w+\]"),
    re.compile(r"Add\. Sense: (?P<asc>.+)$"),
    re.compile(r"ASC=0x\w+ <<vendor>>ASCQ=0x\w+$"),
    re.compile(r"CDB: (?P<cdb>.+)$"),
)
_SCSI_SINGLES: Final = (
    (re.compile(r"timing out command, waited (?P<waited_s>\d+)s"), "timeout"),
    (re.compile(r"Device offlined - not ready after error recovery"), "offline"),
    (re.compile(r"rejecting I/O to offline device"), "offline"),
)
_ATA: Final = re.compile(r"(?P<port>ata\d+)(?P<dd>\.\d+)?: (?P<rest>.*)$", re.DOTALL)
_ATA_EXCEPTION: Final = re.compile(
    r"exception Emask (?P<emask>0x[0-9a-f]+) SAct (?P<sact>0x[0-9a-f]+) SErr (?P<serr>0x[0-9a-f]+)"
    r" action (?P<action>0x[0-9a-f]+)(?P<frozen> frozen)?"
)
_ATA_LISTS: Final = (
    (re.compile(r"failed command: (?P<v>.+)$"), "failed_commands"),
    (re.compile(r"cmd .*Emask 0x[0-9a-f]+ \((?P<v>[^)]*)\)", re.DOTALL), "err_masks"),
)
_ATA_BITS: Final = re.compile(r"(?P<which>status|error|SError): \{ (?P<bits>.*?) ?\}")
_ATA_LINK_UP: Final = re.compile(r"SATA link up (?P<link_speed>\S+ Gbps)")
_ATA_QUIET_USEC: Final = 40_000_000
_NVME: Final = re.compile(r"nvme (?P<device>nvme\d+): (?P<rest>.*)$")
_NVME_FORMS: Final = (
    (re.compile(
        r"I/O tag (?P<tag>\d+) \((?P<cid>[0-9a-f]{4})\) opcode (?P<opcode>0x[0-9a-f]+) "
        r"\((?P<opcode_name>[^)]*)\) QID (?P<qid>\d+) timeout, (?P<action>[\w ]+?)"
        r"(?: req_op:(?P<req_op>\w+)\(\d+\) size:(?P<size>\d+))?$"), "timeout"),
    (re.compile(r"I/O (?P<tag>\d+) (?:\((?P<opcode_name>[^)]*)\) )?QID (?P<qid>\d+) timeout, "
                r"(?P<action>.+)$"), "timeout"),
    (re.compile(r"controller is down; will reset: CSTS=(?P<csts>0x[0-9a-f]+)"), "controller_down"),
    (re.compile(r"Device not ready; aborting reset, CSTS=(?P<csts>0x[0-9a-f]+)"), "reset_failed"),
    (re.compile(r"Removing after probe failure status: (?P<errno>-?\d+)"), "device_removed"),
)  # fmt: skip
_NVME_ERROR: Final = re.compile(
    r"(?P<device>nvme\d+n\d+): (?P<opcode_name>.+?)\((?P<opcode>0x[0-9a-f]+)\) @ LBA (?P<lba>\d+),"
    r" (?P<blocks>\d+) blocks, (?P<status_text>.+?) \(sct (?P<sct>0x[0-9a-f]+) / sc "
    r"(?P<sc>0x[0-9a-f]+)\) ?(?P<flags>.*)$"
)
_INT: Final[dict[str, Any]] = {
    **dict.fromkeys(
        [
            "sector",
            "phys_seg",
            "prio_class",
            "logical_block",
            "tag",
            "cmd_age_s",
            "waited_s",
            "qid",
            "size",
            "errno",
            "lba",
            "blocks",
        ],
        int,
    ),
    "op_code": hex_int,
    "cid": lambda value: "0x" + value,
}


class BlockIoErrorReport(SingleReport):
    """block_io_error: one block-layer or buffer-head I/O error line."""

    class_name = "block_io_error"


def detect_block_io_error(record: Record, text: str) -> BlockIoErrorReport | None:
    """A ``<status> error, dev ...`` or ``Buffer I/O error on dev ...`` line."""
    fields: Fields = {}
    match = _BUFFER.match(text)
    if match:
        fields["source"] = "buffer"
    else:
        match = _BLK.match(text)
        if match is None:
            return None
        fields["source"] = "blk"
    apply_match(fields, match, _INT)
    if "legacy_flags" in fields:
        fields["flags"] = fields.pop("legacy_flags")
    return BlockIoErrorReport(record, fields)


class StorageErrorReport(Report):
    """storage_error: one SCSI, ATA or NVMe error (single, or a small device-keyed group)."""

    class_name = "storage_error"


class ScsiFailure(StorageErrorReport):
    """``FAILED Result`` and the same command's sense and CDB lines."""

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Same device and tag; the CDB line is the last one."""
        del record, previous_text
        match = _SCSI.match(text)
        if match is None or f"{match['hctl']} {match['tag']}" != self.key:
            return Verdict.REJECT
        for pattern in _SCSI_MEMBERS:
            member = pattern.match(match["rest"])
            if member:
                apply_match(self.fields, member, {})
                return Verdict.DONE if "cdb" in member.groupdict() else Verdict.JOIN
        return Verdict.REJECT


class AtaErrorHandling(StorageErrorReport):
    """One libata EH episode of a port: ``exception Emask`` ... ``EH complete``."""

    quiet_usec = _ATA_QUIET_USEC

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Every record of the port joins; ``EH complete`` ends the episode."""
        del record, previous_text
        match = _ATA.match(text)
        if match is None or match["port"] != self.key or _ATA_EXCEPTION.match(match["rest"]):
            return Verdict.REJECT
        rest = match["rest"]
        if rest.startswith("EH complete"):
            self.fields["eh_complete"] = self.end_met = True
            return Verdict.DONE
        take_ata_detail(rest, self.fields)
        return Verdict.JOIN

    def finish(self) -> None:
        """The kind follows from what EH saw."""
        fields = self.fields
        if "timeout" in fields.get("err_masks", ()):
            fields["kind"] = "timeout"
        elif fields.get("failed_commands"):
            fields["kind"] = "command_failed"
        else:
            fields["kind"] = "reset" if fields.get("hard_reset") else "command_failed"


def take_ata_detail(rest: str, fields: Fields) -> None:
    """Fields of one EH line (failed command, masks, status bits, resets, link speed)."""
    for pattern, name in _ATA_LISTS:
        match = pattern.match(rest)
        if match:
            fields.setdefault(name, []).append(match["v"])
            return
    match = _ATA_BITS.match(rest)
    if match:
        name = {"status": "status_bits", "error": "error_bits"}.get(match["which"], "serr_bits")
        fields[name] = match["bits"].split()
    elif rest.startswith("hard resetting link"):
        fields["hard_reset"] = True
    else:
        link = _ATA_LINK_UP.match(rest)
        if link:
            fields["link_speed"] = link["link_speed"]


def detect_storage_error(record: Record, text: str) -> StorageErrorReport | None:
    """A SCSI, ATA or NVMe error line."""
    if text.startswith("ata"):
        return _detect_ata(record, text)
    if text.startswith("nvme"):
        return _detect_nvme(record, text)
    match = _SCSI.match(text)
    if match is None:
        return None
    fields: Fields = {"transport": "scsi", "device": match["device"], "hctl": match["hctl"]}
    if match["tag"] is not None:
        fields["tag"] = int(match["tag"])
    failed = _SCSI_FAILED.match(match["rest"])
    if failed:
        apply_match(fields, failed, _INT)
        fields["kind"] = "command_failed"
        key = f"{match['hctl']} {match['tag']}"
        return ScsiFailure(record, fields, end_met=True, key=key)
    for pattern, kind in _SCSI_SINGLES:
        single = pattern.match(match["rest"])
        if single:
            apply_match(fields, single, _INT)
            fields["kind"] = kind
            return StorageErrorReport(record, fields, done=True)
    return None


def _detect_ata(record: Record, text: str) -> StorageErrorReport | None:
    match = _ATA.match(text)
    exception = _ATA_EXCEPTION.match(match["rest"]) if match else None
    if match is None or exception is None:
        return None
    fields: Fields = {"transport": "ata", "device": match["port"] + (match["dd"] or "")}
    fields["port"] = match["port"]
    apply_match(fields, exception, {})
    fields["frozen"] = exception["frozen"] is not None
    return AtaErrorHandling(record, fields, end_met=False, key=match["port"])


def _detect_nvme(record: Record, text: str) -> StorageErrorReport | None:
    match = _NVME.match(text)
    if match is None:
        error = _NVME_ERROR.match(text)
        if error is None:
            return None
        fields: Fields = {"transport": "nvme"}
        apply_match(fields, error, _INT)
        fields["dnr"] = "DNR" in fields.pop("flags")
        media = fields["sct"] == "0x2"  # status code type 2: media and data integrity errors
        fields["kind"] = "media_error" if media else "command_error"
        return StorageErrorReport(record, fields, done=True)
    for pattern, kind in _NVME_FORMS:
        form = pattern.match(match["rest"])
        if form:
            fields = {"transport": "nvme", "kind": kind, "device": match["device"]}
            apply_match(fields, form, _INT)
            return StorageErrorReport(record, fields, done=True)
    return None
