"""Start-up recovery of one boot directory: check every header, cut a torn tail.

Never raises on what the files hold and never loops (SPOOL.md, "what users hit"): a segment
with a bad header, or a tail that cannot be cut, is quarantined through the callback (it
becomes an exact ``spool_corrupt`` hole); a crash between ``evicted.json`` and an unlink
leaves a segment that is deleted here. Cost: every header, plus one scan of the boot's
newest segment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import structlog

from forwarder.spool.format import HEADER_SIZE, SegmentHeader, decode_frames, decode_header
from forwarder.spool.segments import (
    SEGMENT_NAME,
    Boot,
    Segment,
    boot_directory_name,
    load_evicted,
)
from forwarder.spool.writer import INDEX_EVERY, SpoolStats

log = structlog.get_logger("forwarder.spool")
Quarantine = Callable[[Segment, str], None]


def recover_boot(directory: Path, stats: SpoolStats, quarantine: Quarantine) -> Boot | None:
    """The boot a directory holds, its newest segment's torn tail cut; None if nothing usable."""
    marker = load_evicted(directory)
    segments, headers = _scan_directory(directory, quarantine)
    source = next(iter(headers.values()), None)
    if source is not None:
        boot = Boot(source.boot_id, directory, source.clock_offset_ns, source.created_ns)
    elif marker is not None:
        boot = Boot(
            str(marker["boot_id"]),
            directory,
            int(str(marker["clock_offset_ns"])),
            int(str(marker["created_ns"])),
        )
    else:
        if segments:
            log.warning("spool_boot_unknown", directory=str(directory))
        return None
    if marker is not None and marker["boot_id"] == boot.boot_id:
        boot.evicted = (int(str(marker["first_seq"])), int(str(marker["last_seq"])))
    boot.segments = [s for s in segments if not _evicted_leftover(boot, s)]
    for segment, after in zip(boot.segments, boot.segments[1:], strict=False):
        following = None if after.bad else headers.get(after.first_seq)
        if not segment.bad and following is not None:
            segment.last_seq = following.prev_last_seq
    good = boot.good()
    if good:
        _recover_tail(good[-1], headers[good[-1].first_seq], stats, quarantine)
    tail = max(
        (s.last_seq for s in good if s.last_seq is not None),
        default=boot.evicted[1] if boot.evicted else None,
    )
    # A quarantined newest segment may be refilled from the ring: its range stays open.
    if tail is None and boot.segments and boot.segments[-1].bad:
        tail = boot.segments[-1].first_seq - 1
    boot.tail_seq = tail
    return boot


def _scan_directory(
    directory: Path, quarantine: Quarantine
) -> tuple[list[Segment], dict[int, SegmentHeader]]:
    """The boot's segment files, each header checked (a bad one is quarantined)."""
    segments: list[Segment] = []
    headers: dict[int, SegmentHeader] = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                entry.unlink()
            continue
        match = SEGMENT_NAME.fullmatch(entry.name)
        if match is None:
            continue
        first = int(match.group(1))
        segment = Segment(first, entry, entry.stat().st_size, bad=match.group(2) is not None)
        segment.synced_size = segment.size
        if not segment.bad:
            header = _read_header(entry)
            if (
                header is None
                or header.first_seq != first
                or boot_directory_name(header.boot_id) != directory.name
            ):
                quarantine(segment, "bad_header")
            else:
                headers[first] = header
        segments.append(segment)
    segments.sort(key=lambda segment: (segment.first_seq, not segment.bad))
    return segments, headers


def _evicted_leftover(boot: Boot, segment: Segment) -> bool:
    """A segment already evicted (the crash came between evicted.json and the unlink)."""
    if boot.evicted is None or segment.first_seq > boot.evicted[1]:
        return False
    with contextlib.suppress(OSError):
        segment.path.unlink()
    return True


def _recover_tail(
    segment: Segment, header: SegmentHeader, stats: SpoolStats, quarantine: Quarantine
) -> None:
    """Scan the newest segment of a boot; cut a torn or damaged tail."""
    data = segment.path.read_bytes()
    frames, end, _ = decode_frames(data, HEADER_SIZE, header.first_seq - 1)
    if end < len(data):
        stats.truncated_bytes += len(data) - end
        log.warning(
            "spool_tail_truncated",
            segment=str(segment.path),
            bytes=len(data) - end,
            kept_records=len(frames),
        )
        try:
            fd = os.open(segment.path, os.O_WRONLY)
            try:
                os.ftruncate(fd, end)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            # Cannot cut it: quarantine instead, never append after garbage.
            quarantine(segment, f"truncate failed: {error.strerror}")
    segment.size = segment.synced_size = end
    for position in range(0, len(frames), INDEX_EVERY):
        start = HEADER_SIZE if position == 0 else frames[position - 1].end
        if position == 0 or frames[position - 1].end != frames[position].end:
            segment.note(frames[position].seq, start)  # blocks start there
    segment.last_seq = frames[-1].seq if frames else header.prev_last_seq
    if segment.last_seq is None:
        segment.last_seq = header.first_seq - 1


def _read_header(path: Path) -> SegmentHeader | None:
    try:
        with path.open("rb") as segment_file:
            return decode_header(segment_file.read(HEADER_SIZE))
    except OSError:
        return None
