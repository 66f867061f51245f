"""Idle footprint of the forwarder and its capture process: memory and CPU.

Starts ``python -m forwarder run`` (output to /dev/null, state in a temporary directory),
lets it read the ring and settle, then watches both processes for ``--window-s``: VmRSS,
VmHWM (peak RSS), Pss (shared pages split between the processes) and the CPU seconds
each used in the window. Scenarios: the default config (real /dev/kmsg to stdout), the
same with the metrics server on, a trickle of 1,000 records/s (the capture process must
sleep between records, not spin), and an idle dump file in follow mode.

    .venv/bin/python bench/idle_bench.py
    .venv/bin/python bench/idle_bench.py --settle-s 10 --window-s 10
    .venv/bin/python bench/idle_bench.py --scenarios default,metrics,follow

Needs root (reads and writes /dev/kmsg). A measurement, not a test: the figures depend on
the machine, the Python build and the libraries installed, so they belong in the README,
never in assertions.
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


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _trickle(window_s: float, per_second: int) -> None:
    """Write ``per_second`` records a second to /dev/kmsg (a fresh fd per 10: ratelimit)."""
    end = time.monotonic() + window_s
    index = 0
    while time.monotonic() < end:
        fd = os.open("/dev/kmsg", os.O_WRONLY)
        try:
            for _ in range(10):
                os.write(fd, f"<14>idle-bench trickle {index}\n".encode())
                index += 1
                time.sleep(1 / per_second)
        finally:
            os.close(fd)


def _config_text(scenario: str, tmp: Path) -> str:
    if scenario == "metrics":
        return f'[metrics]\nlisten = "127.0.0.1:{_free_port()}"\n'
    if scenario == "follow":
        dump = tmp / "kmsg.dump"
        dump.write_bytes(b"6,1,100,-;idle-bench\n")
        return f'[source]\npath = "{dump}"\nfollow = true\n'
    return ""


def measure(scenario: str, settle_s: float, window_s: float) -> dict[str, tuple[float, ...]]:
    """Run one scenario; {process: (rss KiB, hwm KiB, pss KiB, CPU s in the window)}."""
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
        command = [sys.executable, "-m", "forwarder", "run"]
        if text := _config_text(scenario, Path(tmp)):
            config = Path(tmp) / "forwarder.toml"
            config.write_text(text)
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
            pids = {"main": process.pid, "capture": capture}
            cpu_before = {name: _cpu_s(pid) for name, pid in pids.items()}
            if scenario == "trickle":
                _trickle(window_s, per_second=1000)
            else:
                time.sleep(window_s)
            return {
                name: (
                    _status_kib(pid, "VmRSS"),
                    _status_kib(pid, "VmHWM"),
                    _pss_kib(pid),
                    _cpu_s(pid) - cpu_before[name],
                )
                for name, pid in pids.items()
            }
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _mib(kib: float) -> str:
    return f"{kib / KIB_PER_MIB:7.1f}"


SCENARIOS = {
    "default": "stdout (default)",
    "metrics": "stdout + metrics",
    "trickle": "stdout, 1k rec/s",
    "follow": "idle dump, follow",
}


def main() -> None:
    """Print one row per scenario and process (the worst of ``--runs``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle-s", type=float, default=4.0, help="time to start and settle")
    parser.add_argument("--window-s", type=float, default=5.0, help="time watched")
    parser.add_argument("--runs", type=int, default=1, help="runs per scenario (worst kept)")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (trickle writes to /dev/kmsg)",
    )
    args = parser.parse_args()
    chosen = args.scenarios.split(",")
    if unknown := set(chosen) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    print(f"CPU s: used in a {args.window_s:g} s window after {args.settle_s:g} s of settling")
    print(
        f"{'scenario':<19}{'process':<9}{'VmRSS MiB':>10}{'VmHWM MiB':>10}"
        f"{'Pss MiB':>9}{'CPU s':>7}"
    )
    for scenario in chosen:
        label = SCENARIOS[scenario]
        runs = [measure(scenario, args.settle_s, args.window_s) for _ in range(args.runs)]
        worst = {
            name: tuple(max(run[name][i] for run in runs) for i in range(4)) for name in runs[0]
        }
        worst["both"] = tuple(sum(values[i] for values in worst.values()) for i in range(4))
        for name, (rss, hwm, pss, cpu) in worst.items():
            print(f"{label:<19}{name:<9}{_mib(rss):>10}{_mib(hwm):>10}{_mib(pss):>9}{cpu:>7.2f}")


if __name__ == "__main__":
    main()
