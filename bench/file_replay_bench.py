"""The whole forwarder replaying a generated dump into the file sink: CPU s per million, peak RSS.

    .venv/bin/python -m bench.file_replay_bench [--records N] [--checkout DIR]

``--checkout`` runs another checkout's forwarder (its own .venv) on the same dump, to
compare two versions in one run. CPU is the forwarder's and its capture process's.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from bench.http_sinks_bench import write_dump


def replay(checkout: Path, dump: Path, workdir: Path) -> tuple[float, float, float]:
    """Run ``checkout``'s forwarder on ``dump``; return (CPU s, wall s, peak RSS MiB)."""
    workdir.mkdir(parents=True)
    config = workdir / "forwarder.toml"
    config.write_text(
        f'host = "bench-node"\nstate_dir = "{workdir / "state"}"\n[source]\npath = "{dump}"\n'
        f'[sinks.file]\ntype = "file"\npath = "{workdir / "out.ndjson"}"\n'
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [checkout / ".venv/bin/python", "-m", "forwarder", "run", "--config", config],
        cwd=checkout,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, wall, after.ru_maxrss / 1024


def main() -> None:
    """Replay the same dump through each checkout and print CPU s/M and peak RSS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--checkout", type=Path, action="append", default=[])
    args = parser.parse_args()
    checkouts = [Path.cwd(), *args.checkout]
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "dump"
        write_dump(dump, args.records)
        for number, checkout in enumerate(checkouts):
            cpu, wall, rss = replay(checkout, dump, Path(tmp) / str(number))
            lines = sum(1 for _ in (Path(tmp) / str(number) / "out.ndjson").open("rb"))
            print(
                f"{checkout}: {cpu * 1e6 / args.records:6.2f} CPU s/M, wall {wall:6.1f} s, "
                f"peak RSS (max of runs so far) {rss:5.0f} MiB, {lines} lines"
            )


if __name__ == "__main__":
    main()
