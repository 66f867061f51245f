"""What kernel events cost the whole forwarder: CPU per record with them on vs off, same run.

    .venv/bin/python bench/kernel_events_cost_bench.py [--records N] [--runs R] [--dumps core,mix]

Each run is the real ``python -m forwarder run`` replaying a dump into the file sink (as
bench/core_bench.py's replay row does), with ``[kernel_events] enabled`` false or true,
alternating off/on ``--runs`` times; the CPU (utime + stime of the forwarder and its
capture child) of the best run of each side is compared, since a shared machine only
ever adds time. Dumps:

- core: bench/http_sinks_bench.py's generator, the core bench's replay dump. Every record
  is facility kern and five of its six message templates are themselves kernel events
  (netfilter LOG, a USB device, an audit record, a link state change, an OOM kill line):
  the worst case, ~0.8 events per record.
- mix: bench/kernel_events_bench.py's realistic mix: driver chatter with the shared
  vectors' reports spliced in (a few percent of records belong to a report).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from http_sinks_bench import write_dump
from kernel_events_bench import build_mix

DUMPS = ("core", "mix")


def children_cpu_s() -> float:
    """utime + stime of every waited-for child so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_mix(path: Path, count: int) -> None:
    """The realistic mix as a dump (kern, the records' own levels)."""
    with path.open("wb") as dump:
        for record in build_mix(count):
            escaped = record.message.replace("\\", "\\x5c").replace("\t", "\\x09")
            escaped = escaped.replace("\n", "\\x0a")
            prefix = record.facility_code << 3 | record.level_code
            dump.write(f"{prefix},{record.seq},{record.ts_usec},-;{escaped}\n".encode())


def replay(dump: Path, workdir: Path, *, kernel_events: bool) -> tuple[float, int, int]:
    """CPU seconds of one replay, the lines written and the kernel events among them."""
    output = workdir / "out.ndjson"
    state = workdir / "state"
    subprocess.run(["rm", "-rf", str(state), str(output)], check=True)
    config = workdir / "bench.toml"
    config.write_text(
        f'host = "bench-node"\nstate_dir = "{state}"\n[source]\npath = "{dump}"\n'
        f"[kernel_events]\nenabled = {'true' if kernel_events else 'false'}\n"
        f'[sinks.out]\ntype = "file"\npath = "{output}"\n'
    )
    before = children_cpu_s()
    subprocess.run(
        [sys.executable, "-m", "forwarder", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "bench.log").open("wb"),
        check=True,
    )
    cpu_s = children_cpu_s() - before
    lines = events = 0
    with output.open("rb") as written:
        for line in written:
            lines += 1
            events += line.startswith(b'{"event":"kernel_event"')
    output.unlink()
    return cpu_s, lines, events


def main() -> int:
    """Run both settings on each dump; print one line per dump."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dumps", default=",".join(DUMPS))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kernel-events-bench-"))
    per_million = 1e6 / args.records
    for name in args.dumps.split(","):
        dump = workdir / f"{name}.kmsg"
        (write_dump if name == "core" else write_mix)(dump, args.records)
        best = {False: float("inf"), True: float("inf")}
        events = 0
        for _ in range(args.runs):
            for setting in (False, True):
                cpu_s, lines, found = replay(dump, workdir, kernel_events=setting)
                best[setting] = min(best[setting], cpu_s)
                if setting:
                    events = found
                    assert lines == args.records + found, (lines, found)
        dump.unlink()
        off, on = best[False] * per_million, best[True] * per_million
        print(
            f"{name}: {args.records:,} records, {events:,} kernel events; CPU s per million "
            f"records, best of {args.runs}: off {off:.1f}, on {on:.1f}, "
            f"growth {(on / off - 1) * 100:+.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
