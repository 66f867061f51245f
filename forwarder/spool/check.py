"""Read-only inspection of a spool: ``kmsg-forwarder spool check`` and ``status``.

Never writes: a torn tail or a bad segment is reported, not cut or quarantined (the next
start of the forwarder does that). With ``verify`` every frame's CRC is checked; without it
only the headers and each boot's newest segment are read (fast enough for ``status``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forwarder.spool.format import HEADER_SIZE, decode_frames, decode_header
from forwarder.spool.segments import SEGMENT_NAME, load_evicted


@dataclass(slots=True)
class BootReport:
    """What one boot directory holds."""

    boot_id: str
    created_ns: int = 0
    segments: int = 0
    records: int = 0
    bytes: int = 0
    oldest_seq: int | None = None
    newest_seq: int | None = None
    evicted: tuple[int, int] | None = None
    damage: list[str] = field(default_factory=list)
    verified: bool = False

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON data."""
        return {
            "boot_id": self.boot_id,
            "segments": self.segments,
            "bytes": self.bytes,
            "records": self.records if self.verified else None,
            "oldest_seq": self.oldest_seq,
            "newest_seq": self.newest_seq,
            "evicted": None
            if self.evicted is None
            else {"first_seq": self.evicted[0], "last_seq": self.evicted[1]},
            "damage": self.damage,
        }


@dataclass(slots=True)
class SpoolReport:
    """The whole spool."""

    path: Path
    boots: list[BootReport] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        """True if any file is damaged."""
        return bool(self.damage) or any(boot.damage for boot in self.boots)

    @property
    def bytes(self) -> int:
        """Bytes of every segment file."""
        return sum(boot.bytes for boot in self.boots)

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON data."""
        return {
            "path": str(self.path),
            "bytes": self.bytes,
            "boots": [boot.as_json() for boot in self.boots],
            "damaged": self.damaged,
            "damage": self.damage,
        }


def inspect_spool(directory: Path, *, verify: bool) -> SpoolReport:
    """Describe the spool in ``directory`` without changing it."""
    report = SpoolReport(directory)
    if not directory.exists():
        return report
    try:
        entries = sorted(entry for entry in directory.iterdir() if entry.is_dir())
    except OSError as error:
        report.damage.append(f"{directory}: unreadable ({error.strerror})")
        return report
    for entry in entries:
        report.boots.append(_inspect_boot(entry, verify=verify))
    report.boots.sort(key=lambda boot: boot.created_ns)
    return report


def _inspect_boot(directory: Path, *, verify: bool) -> BootReport:
    boot = BootReport(boot_id=directory.name, verified=verify)
    marker = load_evicted(directory)
    if marker is not None:
        boot.boot_id = str(marker["boot_id"])
        boot.created_ns = int(str(marker["created_ns"]))
        boot.evicted = (int(str(marker["first_seq"])), int(str(marker["last_seq"])))
    files = sorted(
        (entry for entry in directory.iterdir() if SEGMENT_NAME.fullmatch(entry.name)),
        key=lambda entry: entry.name,
    )
    for position, path in enumerate(files):
        boot.bytes += path.stat().st_size
        boot.segments += 1
        if path.name.endswith(".bad"):
            boot.damage.append(f"{path.name}: quarantined")
            continue
        newest = position == len(files) - 1
        _inspect_segment(boot, path, scan=verify or newest)
    return boot


def _inspect_segment(boot: BootReport, path: Path, *, scan: bool) -> None:
    first = int(path.name[:20])
    try:
        data = path.read_bytes() if scan else path.read_bytes()[:HEADER_SIZE]
    except OSError as error:
        boot.damage.append(f"{path.name}: unreadable ({error.strerror})")
        return
    header = decode_header(data)
    if header is None or header.first_seq != first:
        boot.damage.append(f"{path.name}: bad header")
        return
    boot.boot_id = header.boot_id
    boot.created_ns = boot.created_ns or header.created_ns
    if boot.oldest_seq is None:
        boot.oldest_seq = first
    if not scan:
        return
    frames, end, _ = decode_frames(data, HEADER_SIZE, first - 1)
    boot.records += len(frames)
    if frames:
        boot.newest_seq = frames[-1].seq
    if end < len(data):
        boot.damage.append(
            f"{path.name}: {len(data) - end} bytes after seq "
            f"{frames[-1].seq if frames else first - 1} fail their checksum or are cut short"
        )
