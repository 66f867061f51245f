"""The raw records the kernel-event stage feeds its classifier, read as cheaply as it can."""

from __future__ import annotations

from collections.abc import Sequence

from forwarder.encoding.chunk import Chunk
from forwarder.errors import RecordParseError
from forwarder.source.parser import Record, parse_record, unescape


def _parse(raw: bytes) -> Record | None:
    """The record, or None: the encoder already counted, logged or set aside a bad one."""
    try:
        return parse_record(raw)
    except RecordParseError:
        return None
    except Exception:  # the safety net: the encoder already set this record aside and counted it
        return None


def parse_for_classification(raw: bytes, prefix: int, seq: int, ts_usec: int) -> Record | None:
    """``parse_record(raw)`` without the dictionary, for a record the encoder took.

    The header's numbers come from the chunk's columns (the encoder checked them), so only
    the flags, the caller id and the text are read; classification reads no dictionary
    field. None for a record the parser would refuse (the encoder already counted it).
    """
    header, semicolon, body = raw.partition(b";")
    parts = header.split(b",")
    if not semicolon or len(parts) < 3:
        return None
    flags = parts[3].decode("ascii", "replace") if len(parts) > 3 and parts[3] else "-"
    caller = None
    for extra in parts[4:]:
        if extra.startswith(b"caller="):
            caller = extra[7:].decode("ascii", "replace")
    message = unescape(body.partition(b"\n")[0])
    return Record(prefix >> 3, prefix & 7, seq, ts_usec, flags, message, caller)


def aligned_raws(chunk: Chunk, raws: Sequence[bytes]) -> list[bytes]:
    """The raw record of each chunk index (b"" if none): the parser left some out (rare)."""
    index_of = {seq: index for index, seq in enumerate(chunk.seqs)}
    window = [b""] * len(chunk)
    for raw in raws:
        record = _parse(raw)
        if record is not None and (index := index_of.get(record.seq)) is not None:
            window[index] = raw
    return window


def kern_openers(may_open: set[int], wanted: list[int]) -> list[int]:
    """The indices among ``wanted`` whose raw record might open a report, in order."""
    return [index for index in wanted if index in may_open] if may_open else []
