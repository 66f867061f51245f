"""The spool alone: CPU per million records appended, fsync latency, and reading it back.

Usage::

    .venv/bin/python bench/spool_bench.py [--records 1000000] [--dir /var/tmp]

Appends windows of 600 records (what one 64 KiB capture window holds) of ~100-byte kmsg
records with the default config (fsync every second, 8 MiB segments), as the reader does,
then reads everything back as a lagging sink's cursor does. Prints CPU seconds per million
records for each side (process time: user + system) and the fsyncs' count and mean/max
latency (SPOOL.md's bench targets: <= 2 CPU s per million appended).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from array import array
from pathlib import Path

from forwarder.spool.config import SpoolConfig
from forwarder.spool.reader import SpoolReader
from forwarder.spool.spool import Spool

WINDOW = 600


def main() -> None:
    """Run the bench and print one table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    raws = [
        b"6,%d,%d,-;eth0: link is up, 1000 Mbps full duplex, flow control rx/tx %08d" % (i, i, i)
        for i in range(args.records)
    ]
    seqs = array("Q", range(args.records))
    workdir = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
    try:
        spool = Spool(SpoolConfig(max_bytes=1 << 40), workdir)
        spool.open("bench-boot", 0)
        fsync_max = 0.0
        began = time.process_time()
        for start in range(0, args.records, WINDOW):
            fsyncs, spent = spool.stats.fsyncs, spool.stats.fsync_seconds
            spool.append(seqs[start : start + WINDOW], raws[start : start + WINDOW])
            if spool.stats.fsyncs > fsyncs:
                fsync_max = max(fsync_max, spool.stats.fsync_seconds - spent)
        spool.close()
        append_s = time.process_time() - began
        reader = SpoolReader(spool, "bench-boot", -1)
        began = time.process_time()
        read = 0
        while entries := reader.read(2048):
            read += len(entries)
        read_s = time.process_time() - began
        per_million = 1e6 / args.records
        stats = spool.stats
        mean_ms = stats.fsync_seconds / max(1, stats.fsyncs) * 1000
        print(f"records: {args.records:,}, on-disk bytes: {spool.total_bytes():,} in {workdir}")
        print(f"append CPU s/M: {append_s * per_million:.2f} (target <= 2)")
        print(f"read back CPU s/M: {read_s * per_million:.2f} ({read:,} records)")
        print(f"fsyncs: {stats.fsyncs}, mean {mean_ms:.1f} ms, max {fsync_max * 1000:.1f} ms")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
