"""What loading the config costs: RSS and time to import it, time to validate a full file.

Each figure comes from a fresh interpreter started in ``--tree`` (a checkout whose
``forwarder`` package is measured; default: this one), so an older tree can be measured
beside this one with the same interpreter and libraries:

    .venv/bin/python bench/config_bench.py
    git archive OLD forwarder | tar -x -C /tmp/old && .venv/bin/python bench/config_bench.py --tree /tmp/old

Rows: the bare interpreter; after ``import forwarder.config`` (the config tables, the sink
registry and the validation library, no sink client); wall time of that import (best of
``--runs``); and the time ``parse_config`` takes for a file with every table and four sinks.
A measurement, not a test: the figures belong in the README.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

_PROBE = """
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
bare = rss()
start = time.perf_counter()
from forwarder.config import parse_config
imported_s = time.perf_counter() - start
after = rss()
raw = {
    "host": "node-1", "state_dir": "/tmp/state", "shutdown_timeout_s": 5,
    "source": {"min_level": "warning", "start_at": "newest", "buffer_records": 4096},
    "batch": {"max_records": 1000, "linger_ms": 50},
    "retry": {"initial_backoff_ms": 100, "budget_s": 60},
    "metrics": {"listen": "127.0.0.1:9108"},
    "sinks": {
        "archive": {"type": "file", "path": "/var/log/kmsg.ndjson"},
        "kafka": {"type": "kafka", "bootstrap_servers": "a:9092,b:9092", "topic": "kmsg",
                  "compression": "gzip", "sasl": {"username": "u", "password": "p"}},
        "loki": {"type": "loki", "endpoint": "http://loki:3100", "labels": {"job": "kmsg"}},
        "es": {"type": "elasticsearch", "endpoint": "http://es:9200", "api_key": "k"},
    },
}
parse_config(raw)  # the first call imports what the sink tables need (yarl, aiokafka.codec)
loops = 2000
start = time.perf_counter()
for _ in range(loops):
    parse_config(raw)
parse_us = (time.perf_counter() - start) / loops * 1e6
print(bare, after, imported_s, parse_us)
"""


def _probe(tree: Path) -> tuple[float, float, float, float]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=tree, capture_output=True, check=True, text=True
    )
    bare, after, imported_s, parse_us = map(float, done.stdout.split())
    return bare, after, imported_s, parse_us


def main() -> None:
    """Print the figures for one tree (best of ``--runs`` for the times)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = [_probe(args.tree) for _ in range(args.runs)]
    bare = min(run[0] for run in runs)
    after = max(run[1] for run in runs)
    print(f"tree: {args.tree}")
    print(f"bare interpreter RSS           {bare:8.1f} MiB")
    print(f"after import forwarder.config  {after:8.1f} MiB  (+{after - bare:.1f})")
    print(f"import forwarder.config        {min(run[2] for run in runs) * 1000:8.1f} ms")
    print(f"parse_config, full file        {min(run[3] for run in runs):8.1f} us")


if __name__ == "__main__":
    main()
