"""The obvious, slow model of how a dump becomes records (what the capture process must match)."""

from __future__ import annotations

from forwarder.errors import RecordParseError
from forwarder.source.capture_process import MAX_RECORD_BYTES, FrameKind, RejectReason
from forwarder.source.parser import parse_record

_REJECTED = b"\x01" + bytes((FrameKind.REJECTED,))


def reference_frames(dump: bytes) -> list[bytes]:
    """Cut before every line that starts no continuation; reject what no kernel writes."""
    *complete, last = dump.split(b"\n")
    lines = [line + b"\n" for line in complete] + ([last] if last else [])
    records: list[bytes] = []
    for line in lines:
        if records and line.startswith(b" "):
            records[-1] += line
        else:
            records.append(line)
    frames = []
    for record in records:
        if len(record) > MAX_RECORD_BYTES:
            frames.append(_REJECTED + RejectReason.TOO_LONG)
        elif b"\x00" in record:
            frames.append(_REJECTED + RejectReason.NUL)
        else:
            frames.append(record.replace(b"\x01", b"\\x01"))
    return frames


def expected_seqs(dump: bytes) -> list[int]:
    """Seqs a sink without checkpoint receives: valid records whose seq is above every earlier one."""
    delivered: list[int] = []
    for frame in reference_frames(dump):
        if frame.startswith(_REJECTED):
            continue
        try:
            seq = parse_record(frame).seq
        except RecordParseError:
            continue
        if not delivered or seq > delivered[-1]:
            delivered.append(seq)
    return delivered
