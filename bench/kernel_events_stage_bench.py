"""What the kernel-event stage costs in-process: ``route`` with events on vs off, per record.

    .venv/bin/python bench/kernel_events_stage_bench.py [--records N] [--runs R] [--dumps core,mix]

The dumps of bench/kernel_events_cost_bench.py, read in windows of 512 records, encoded
once; only ``KernelEventStage.route`` (the router, plus the classifier and the events'
insertion when on) is timed, best of ``--runs`` (a shared machine only ever adds time).
The difference, divided by records and by events, is what the stage adds per record and
per event, without the sinks' cost of writing the events.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from http_sinks_bench import write_dump
from kernel_events_cost_bench import write_mix

from forwarder.encoding.chunk import Chunk, ChunkEncoder, Slice
from forwarder.encoding.reference import Event, Identity
from forwarder.kernel_events.config import KernelEventsConfig
from forwarder.kernel_events.stage import KernelEventStage
from forwarder.routing import Item, Router
from forwarder.telemetry.events import Emitter

IDENTITY = Identity("bench-node", "5b1e7c1a-2f4d-4c1e-9a7b-3d2e1f0a9b8c", 1_790_000_000 * 10**9)
WINDOW = 512


def windows(dump: Path) -> list[tuple[Chunk, list[bytes]]]:
    """The dump's records as the reader hands them to the stage."""
    records = [line + b"\n" for line in _records(dump.read_bytes())]
    encoder = ChunkEncoder(IDENTITY)
    out = []
    for start in range(0, len(records), WINDOW):
        raws = records[start : start + WINDOW]
        out.append((encoder.encode(raws, _bad, _bad), raws))
    return out


def _records(data: bytes) -> list[bytes]:
    """Split a dump into records: a dictionary line starts with a space."""
    records: list[bytes] = []
    for line in data.rstrip(b"\n").split(b"\n"):
        if line.startswith(b" ") and records:
            records[-1] += b"\n" + line
        else:
            records.append(line)
    return records


def _bad(*args: object) -> None:
    raise AssertionError(args)


def route_all(work: list[tuple[Chunk, list[bytes]]], *, enabled: bool) -> tuple[float, int]:
    """CPU seconds of routing every window through a fresh stage; the events made."""
    router = Router(IDENTITY, {"out": None}, min_level=7, now_ns=time.time_ns)
    stage = KernelEventStage(
        KernelEventsConfig(enabled=enabled),
        IDENTITY,
        {"out": None},
        {},
        Emitter(None),
        lines_only=("out",),  # the cost bench's file sink reads batches as lines
    )
    outs: list[list[Item]] = []
    started = time.process_time()
    for number, (chunk, raws) in enumerate(work):
        out: dict[str, list[Item]] = {"out": []}
        stage.route(chunk, raws, router, out, end=number == len(work) - 1)
        outs.append(out["out"])
    elapsed = time.process_time() - started
    return elapsed, sum(_kernel_events(items) for items in outs)


def _kernel_events(items: list[Item]) -> int:
    """Kernel events among ``items``: standalone, or rows of a merged chunk's slice."""
    count = 0
    for item in items:
        if isinstance(item, Slice):
            rows = item.chunk.events or {}
            count += sum(item.start <= row < item.stop for row in rows)
        else:
            count += isinstance(item, Event) and item.kind == "kernel_event"
    return count


def main() -> int:
    """One line per dump: µs per record off and on, and what the stage adds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dumps", default="core,mix")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kernel-events-stage-bench-"))
    for name in args.dumps.split(","):
        dump = workdir / f"{name}.kmsg"
        (write_dump if name == "core" else write_mix)(dump, args.records)
        work = windows(dump)
        dump.unlink()
        best = {False: float("inf"), True: float("inf")}
        events = 0
        for _ in range(args.runs):
            for enabled in (False, True):
                cpu_s, found = route_all(work, enabled=enabled)
                best[enabled] = min(best[enabled], cpu_s)
                events = max(events, found)
        off, on = (best[s] * 1e6 / args.records for s in (False, True))
        added = (best[True] - best[False]) * 1e6
        per_event = f", {added / events:.1f} µs per event if all of it" if events else ""
        print(
            f"{name}: {args.records:,} records, {events:,} events; route µs per record, best of "
            f"{args.runs}: off {off:.2f}, on {on:.2f}, added {on - off:.2f}{per_event}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
