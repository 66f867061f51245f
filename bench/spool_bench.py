"""The spool alone: CPU per million records appended, fsync latency, and reading it back.

Usage::

    .venv/bin/python bench/spool_bench.py [--records 1000000] [--dir /var/tmp] [--crit-every N]

Appends windows of 600 records (what one 64 KiB capture window holds) of ~100-byte kmsg
records with the default config (fsync every second, 8 MiB segments), as the reader does,
then reads everything back as a lagging sink's cursor does. Prints CPU seconds per million
records for each side (process time: user + system, every thread), the fsyncs' count and
mean latency, and the wall time the caller's thread spent inside append (total, longest):
what the reader waits for, an fsync included when one runs there (SPOOL.md's bench targets: <= 2 CPU s per
million appended). ``--crit-every N`` puts a crit record in every Nth window, so each of
those asks for an fsync at once (the urgent path).
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
    parser.add_argument("--crit-every", type=int, default=0, help="0: no crit records")
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
        append_max_s = append_wall_s = 0.0
        slow_appends = 0
        began = time.process_time()
        for window, start in enumerate(range(0, args.records, WINDOW)):
            urgent = bool(args.crit_every and window % args.crit_every == 0)
            called = time.perf_counter()
            spool.append(seqs[start : start + WINDOW], raws[start : start + WINDOW], urgent=urgent)
            took = time.perf_counter() - called
            append_max_s = max(append_max_s, took)
            append_wall_s += took
            slow_appends += took > 0.001
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
        print(f"fsyncs: {stats.fsyncs}, mean {mean_ms:.1f} ms")
        print(
            f"caller's thread inside append: {append_wall_s:.2f} s wall, longest "
            f"{append_max_s * 1000:.1f} ms, {slow_appends} of {-(-args.records // WINDOW)} over 1 ms"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
