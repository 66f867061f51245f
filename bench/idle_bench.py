"""Idle memory of the forwarder and its capture process on this machine's /dev/kmsg.

Starts ``python -m forwarder run`` (default config: /dev/kmsg to stdout, here /dev/null)
with its state in a temporary directory, lets it read the ring and go idle, then prints
VmRSS, VmHWM (peak RSS) and Pss (shared pages split between the processes) of both.

    .venv/bin/python bench/idle_bench.py                  # default config, plus metrics on
    .venv/bin/python bench/idle_bench.py --settle-s 10 --runs 3

Needs root (reads /dev/kmsg). A measurement, not a test: the figures depend on the
Python build and the libraries installed, and belong in the README, not in assertions.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIB_PER_MIB = 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for pid {pid}")


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(metrics: bool, settle_s: float) -> dict[str, tuple[int, int, int]]:
    """Start the forwarder, wait ``settle_s``, return {process: (rss, hwm, pss)} in KiB."""
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
        command = [sys.executable, "-m", "forwarder", "run"]
        if metrics:
            config = Path(tmp) / "forwarder.toml"
            config.write_text(f'[metrics]\nlisten = "127.0.0.1:{_free_port()}"\n')
            command += ["--config", str(config)]
        env = {**os.environ, "XDG_STATE_HOME": tmp}
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        try:
            time.sleep(settle_s)
            if process.poll() is not None:
                raise RuntimeError(f"forwarder exited with {process.returncode}")
            (capture,) = _children(process.pid)
            return {
                name: (_status_kib(pid, "VmRSS"), _status_kib(pid, "VmHWM"), _pss_kib(pid))
                for name, pid in (("main", process.pid), ("capture", capture))
            }
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _mib(kib: int) -> str:
    return f"{kib / KIB_PER_MIB:7.1f}"


def main() -> None:
    """Print one table row per process and configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle-s", type=float, default=5.0, help="idle time before reading")
    parser.add_argument("--runs", type=int, default=1, help="runs per configuration (max kept)")
    args = parser.parse_args()
    print(f"{'config':<18}{'process':<9}{'VmRSS MiB':>10}{'VmHWM MiB':>10}{'Pss MiB':>9}")
    for label, metrics in (("stdout (default)", False), ("stdout + metrics", True)):
        runs = [measure(metrics, args.settle_s) for _ in range(args.runs)]
        worst = {
            name: tuple(max(run[name][i] for run in runs) for i in range(3)) for name in runs[0]
        }
        for name, (rss, hwm, pss) in worst.items():
            print(f"{label:<18}{name:<9}{_mib(rss):>10}{_mib(hwm):>10}{_mib(pss):>9}")
        totals = [sum(values[i] for values in worst.values()) for i in range(3)]
        print(
            f"{label:<18}{'both':<9}{_mib(totals[0]):>10}{_mib(totals[1]):>10}{_mib(totals[2]):>9}"
        )


if __name__ == "__main__":
    main()
