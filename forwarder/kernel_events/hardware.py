"""hw_error (MCE, EDAC, CPER) and thermal_throttle (SPEC.md sections 3.15, 3.16).

Formats: arch/x86/kernel/cpu/mce/core.c (``mce: [Hardware Error]: ``), drivers/edac/
edac_mc.c and the sb_edac decode, drivers/acpi/apei/ghes.c + drivers/firmware/efi/cper.c
(``{N}[Hardware Error]: ``), drivers/thermal/intel/therm_throt.c (5.5+; the ``mce: ``
prefixed form before).
"""

from __future__ import annotations

import re
from typing import Any, Final

from forwarder.kernel_events.report import Report, SingleReport, Verdict
from forwarder.kernel_events.values import Fields, apply_match, hex_address
from forwarder.source.parser import Record

_MCE_PREFIX: Final = re.compile(r"mce: (?:\[Hardware Error\]: )?(?P<rest>.*)$")
_MCE_RECORD: Final = re.compile(
    r"CPU (?P<cpu>\d+): Machine Check(?: Exception)?(?: Event)?: (?P<mcgstatus>[0-9a-f]+) "
    r"Bank (?P<bank>\d+): (?P<status>[0-9a-f]{16})"
)
_MCE_TOKENS: Final = re.compile(r"(?P<key>TSC|ADDR|MISC|PPIN|SYND|IPID) (?P<value>[0-9a-f]+)")
_MCE_PROCESSOR: Final = re.compile(
    r"PROCESSOR (?P<processor>\S+) TIME (?P<time>\d+) SOCKET (?P<socket>\d+) "
    r"APIC (?P<apic>[0-9a-f]+)"
    r"(?: microcode (?P<microcode>[0-9a-f]+))?"
)
_CMCI: Final = re.compile(r"(?:CPU(?P<cpu>\d+) BANK(?P<bank>\d+) )?CMCI storm detected")
_EDAC_DECODE: Final = re.compile(r"EDAC (?P<driver>\w+) MC(?P<mc>\d+): (?P<rest>.*)$")
_EDAC: Final = re.compile(
    r"EDAC MC(?P<mc>\d+): (?P<count>\d+) (?P<sev>CE|UE) (?P<error_type>.*?) ?on (?P<label>.+?) "
    r"\((?:.*? )?page:(?P<page>0x[0-9a-f]+) offset:(?P<offset>0x[0-9a-f]+) grain:(?P<grain>\d+)"
    r"(?: syndrome:(?P<syndrome>0x[0-9a-f]+))?(?: - +(?P<detail>.*?))?\)$"
)
_CPER: Final = re.compile(r"\{(?P<seqno>\d+)\}\[Hardware Error\]: (?P<rest>.*)$")
_CPER_LINES: Final = (
    re.compile(r"Hardware error from APEI Generic Hardware Error Source: (?P<source_id>\d+)"),
    re.compile(r"event severity: (?P<severity>\w+)"),
    re.compile(r" *section_type: (?P<section_type>.+)$"),
    re.compile(r" *physical_address: (?P<physical_address>0x[0-9a-f]+)"),
    re.compile(r" *fru_text: (?P<fru_text>.+)$"),
)
_THERMAL: Final = re.compile(
    r"(?:mce: )?CPU(?P<cpu>\d+): (?P<level>Core|Package) (?:temperature (?:is )?above threshold, "
    r"cpu clock (?:is )?(?P<throttled>throttled)|temperature/speed (?P<normal>normal))"
    r"(?: \(total events = (?P<total_events>\d+)\))?"
)
_INT: Final[dict[str, Any]] = {
    **dict.fromkeys(
        [
            "cpu",
            "bank",
            "time",
            "socket",
            "mc",
            "count",
            "grain",
            "seqno",
            "source_id",
            "total_events",
        ],
        int,
    ),
    **dict.fromkeys(
        ["mcgstatus", "apic", "microcode", "page", "offset", "syndrome", "physical_address"],
        hex_address,
    ),
}


def take_mce_line(rest: str, fields: Fields) -> bool:
    """Fields of one MCE record line (bank/status, TSC/ADDR/..., PROCESSOR); False if none."""
    match = _MCE_RECORD.match(rest)
    if match:
        apply_match(fields, match, _INT)
        status = int(match["status"], 16)
        fields["status"] = "0x" + match["status"]
        fields["status_uc"] = bool(status >> 61 & 1)
        fields["status_pcc"] = bool(status >> 57 & 1)
        uncorrected = "uncorrected" if fields["status_uc"] else "corrected"
        fields.setdefault("severity", "fatal" if fields["status_pcc"] else uncorrected)
        return True
    match = _MCE_PROCESSOR.match(rest)
    if match:
        apply_match(fields, match, _INT)
        return True
    tokens = _MCE_TOKENS.findall(rest)
    if tokens and rest.startswith(tokens[0][0]):
        fields.update((key.lower(), hex_address(value)) for key, value in tokens)
        return True
    return rest.startswith(("RIP", "Run the above through"))


class HwErrorReport(Report):
    """hw_error: an MCE record, an EDAC error with its decode, or a CPER report."""

    class_name = "hw_error"


class MceRecord(HwErrorReport):
    """``CPU n: Machine Check`` and the consecutive lines of the same record."""

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Consecutive ``mce: [Hardware Error]:`` lines; anything else ends the record."""
        del record, previous_text
        match = _MCE_PREFIX.match(text)
        if (
            match
            and not _MCE_RECORD.match(match["rest"])
            and take_mce_line(match["rest"], self.fields)
        ):
            return Verdict.JOIN
        return Verdict.CLOSE


class EdacGroup(HwErrorReport):
    """An EDAC driver decode (``HANDLING MCE MEMORY ERROR`` ...) and its ``EDAC MCn`` line."""

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Decode lines of the same MC, then the EDAC core line ends the group."""
        del record, previous_text
        if take_edac_line(text, self.fields):
            self.end_met = True
            return Verdict.DONE
        match = _EDAC_DECODE.match(text)
        if match and match["mc"] == str(self.fields["mc"]):
            take_mce_line(match["rest"], self.fields)
            return Verdict.JOIN
        return Verdict.CLOSE


def take_edac_line(text: str, fields: Fields) -> bool:
    """Parse ``EDAC MCn: <count> CE|UE <type> on <label> (...)``; False if it is not one."""
    match = _EDAC.match(text)
    if match is None:
        return False
    apply_match(fields, match, _INT)
    fields["severity"] = "corrected" if fields.pop("sev") == "CE" else "uncorrected"
    fields["kind"] = "edac"
    return True


class CperReport(HwErrorReport):
    """The lines of one ``{N}[Hardware Error]:`` report."""

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """Same ``{N}``: member; another ``{N}``: the report is over."""
        del record, previous_text
        match = _CPER.match(text)
        if match is None:
            return Verdict.REJECT
        if int(match["seqno"]) != self.fields["seqno"]:
            return Verdict.CLOSE
        take_cper_line(match["rest"], self.fields)
        return Verdict.JOIN


def take_cper_line(rest: str, fields: Fields) -> None:
    """Fields of one CPER line."""
    for pattern in _CPER_LINES:
        match = pattern.match(rest)
        if match:
            apply_match(fields, match, _INT)
            return


class ThermalThrottle(SingleReport):
    """thermal_throttle: a CPU core or package throttled or back to normal."""

    class_name = "thermal_throttle"


def detect_hw_event(record: Record, text: str) -> Report | None:
    """An MCE, EDAC, CPER, CMCI storm or thermal line."""
    fields: Fields = {}
    if text.startswith("{"):
        match = _CPER.match(text)
        if match is None:
            return None
        fields = {"kind": "cper", "seqno": int(match["seqno"])}
        take_cper_line(match["rest"], fields)
        started = match["rest"].startswith("Hardware error from APEI")
        return CperReport(record, fields, started=started, key=match["seqno"])
    if text.startswith("EDAC "):
        return _detect_edac(record, text)
    match = _THERMAL.match(text)
    if match:
        apply_match(fields, match, _INT)
        fields["level"] = fields["level"].lower()
        fields["state"] = "throttled" if fields.pop("throttled", None) else "normal"
        fields.pop("normal", None)
        return ThermalThrottle(record, fields)
    return _detect_mce(record, text)


def _detect_mce(record: Record, text: str) -> Report | None:
    fields: Fields = {}
    match = _MCE_PREFIX.match(text)
    if match is None:
        return None
    rest = match["rest"]
    if rest.startswith("Machine check events logged"):
        return HwErrorReport(record, {"kind": "mce_logged"}, done=True)
    if _MCE_RECORD.match(rest) and "[Hardware Error]" in text:
        fields["kind"] = "mce_record"
        take_mce_line(rest, fields)
        return MceRecord(record, fields, key="mce")
    storm = _CMCI.search(rest)
    if storm:
        apply_match(fields, storm, _INT)
        return HwErrorReport(record, {"kind": "cmci_storm", **fields}, done=True)
    return None


def _detect_edac(record: Record, text: str) -> Report | None:
    fields: Fields = {}
    if take_edac_line(text, fields):
        return HwErrorReport(record, fields, done=True)
    match = _EDAC_DECODE.match(text)
    if match is None or not match["rest"].startswith("HANDLING MCE MEMORY ERROR"):
        return None
    fields = {"kind": "edac", "mc": int(match["mc"]), "driver": match["driver"]}
    return EdacGroup(record, fields, end_met=False, key=f"edac{match['mc']}")
