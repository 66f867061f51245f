"""Reference (parse_record + encode_record) vs the chunk encoder, in-process, CPU s per million.

    .venv/bin/python bench/encode_bench.py [--records N] [--window N]

Records come from the realistic generator of bench/http_sinks_bench.py (render_record of
firewall, USB, ext4, audit, NIC and OOM lines; a third carry a dictionary).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.http_sinks_bench import write_dump
from forwarder.encoding.chunk import ChunkEncoder
from forwarder.encoding.reference import Identity, encode_record
from forwarder.source.parser import parse_record

IDENTITY = Identity("bench-node", "3f1c0000-0000-4000-8000-000000000001", 1_764_182_470_000_000_000)


def read_raws(count: int) -> list[bytes]:
    """The raw records of a generated dump, split the way /dev/kmsg reads them."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "dump"
        write_dump(dump, count)
        raws: list[bytes] = []
        pending: list[bytes] = []
        for line in dump.read_bytes().splitlines(keepends=True):
            if not line.startswith(b" ") and pending:
                raws.append(b"".join(pending))
                pending = []
            pending.append(line)
        raws.append(b"".join(pending))
        return raws


def ignore(raw: bytes, error: Exception, seq: int | None = None) -> None:
    """Drop a malformed record (the generated dump has none)."""


def cpu_per_million(work: object, raws: list[bytes]) -> float:
    """Process CPU seconds of ``work(raws)`` scaled to a million records."""
    started = time.process_time()
    work(raws)  # type: ignore[operator]
    return (time.process_time() - started) * 1_000_000 / len(raws)


def main() -> None:
    """Measure both paths on the same records and print CPU s per million."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args()
    raws = read_raws(args.records)
    encoder = ChunkEncoder(IDENTITY)

    def reference(records: list[bytes]) -> None:
        for raw in records:
            encode_record(parse_record(raw), IDENTITY)

    def chunks(records: list[bytes]) -> None:
        for start in range(0, len(records), args.window):
            encoder.encode(records[start : start + args.window], ignore, ignore)

    chunk_lines = encoder.encode(raws, ignore, ignore).lines
    assert chunk_lines == [encode_record(parse_record(raw), IDENTITY).json for raw in raws]
    ref = cpu_per_million(reference, raws)
    fast = cpu_per_million(chunks, raws)
    print(f"{len(raws)} records, window {args.window}")
    print(f"reference parse_record+encode_record: {ref:6.2f} CPU s/M")
    print(f"chunk encoder:                        {fast:6.2f} CPU s/M  ({ref / fast:.1f}x)")


if __name__ == "__main__":
    main()
