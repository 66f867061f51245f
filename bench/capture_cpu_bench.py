"""The capture process alone under a sustained flood: CPU per record and loss, two versions paired.

    flock /tmp/kmsg-flood.lock .venv/bin/python bench/capture_cpu_bench.py \\
        [--rates 100k,300k] [--seconds 5] [--rounds 3] [--baseline-python OLD_VENV/bin/python]

Needs root, gcc, and the flood lock (it writes to /dev/kmsg). Each run starts
``python -m forwarder.source.capture_process`` on /dev/kmsg (opened at its end, SCHED_RR 1,
as the forwarder starts it) with its output in a file on /dev/shm, so no forwarder competes
for the CPU; then bench/inject.c built with -DSLEEP_BETWEEN_GROUPS writes ``rate x seconds``
records at SCHED_RR 1 (groups of 64, sleeping in between: the sustained-flood writer); then
SIGTERM, and the capture's CPU (utime + stime from wait4) per record, the records missing
from its output, and how often it slept (voluntary context switches: naps and polls). With ``--baseline-python`` (an interpreter whose ``forwarder`` package is
another checkout), that version runs first in each round, then this checkout's: rounds pair
the two under the same neighbours. Both get ``--buffer-records 262144`` (the old one requires it).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import capture_bench as capture
from core_bench import build_sleeping_injector

SETTLE_S = 0.5
SHM = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def one_run(
    python: str, injector: Path, rate: int, seconds: float, tag: str
) -> tuple[float, int, int]:
    """CPU seconds of the capture process, records it missed and times it slept, for one flood."""
    records = int(rate * seconds)
    source_fd = os.open(capture.KMSG, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    os.lseek(source_fd, 0, os.SEEK_END)
    with tempfile.NamedTemporaryFile(dir=SHM, prefix="capture-cpu-") as output:
        command = [python, "-m", "forwarder.source.capture_process", f"--fd={source_fd}"]
        command += ["--kind=device", "--buffer-records=262144"]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=output, pass_fds=(source_fd,)
        )
        os.close(source_fd)
        try:
            os.sched_setscheduler(process.pid, os.SCHED_RR, os.sched_param(1))
            time.sleep(SETTLE_S)  # started and asleep in poll() before the flood
            subprocess.run(
                ["chrt", "--rr", "1", injector, tag, str(records), str(rate)],
                check=True,
                capture_output=True,
            )
            time.sleep(SETTLE_S)
            process.send_signal(signal.SIGTERM)
            _pid, _status, usage = os.wait4(process.pid, 0)
            process.returncode = 0  # reaped by wait4
        finally:
            if process.returncode is None:
                process.kill()
                process.wait()
        pattern = re.compile(re.escape(tag).encode() + rb"-(\d{8})")
        seen = {int(number) for number in pattern.findall(Path(output.name).read_bytes())}
    missed = records - len(seen & set(range(records)))
    return usage.ru_utime + usage.ru_stime, missed, usage.ru_nvcsw


def main() -> int:
    """Run the rounds and print one line per run, then the mean per version and rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100k,300k")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-python", default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it writes kernel.printk_devkmsg and injects into /dev/kmsg")
    versions = {"current": sys.executable}
    if args.baseline_python:
        versions = {"baseline": args.baseline_python, **versions}
    rates = [capture.parse_rate(text) for text in args.rates.split(",")]
    results: dict[tuple[str, int], list[tuple[float, int, int]]] = {}
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, {args.seconds:g} s floods")
    print(
        f"{'version':<9} {'rate':>5} {'records':>9} {'lost':>7} {'CPU s':>6} {'µs/rec':>7} "
        f"{'sleeps/1k rec':>13}"
    )
    with tempfile.TemporaryDirectory() as workdir, capture.devkmsg_on():
        injector = build_sleeping_injector(Path(workdir))
        for number in range(args.rounds):
            for rate in rates:
                for name, python in versions.items():
                    tag = capture.record_tag(f"cpu{os.getpid() % 1000}r{number}{name[0]}")
                    cpu_s, lost, sleeps = one_run(python, injector, rate, args.seconds, tag)
                    records = int(rate * args.seconds)
                    results.setdefault((name, rate), []).append((cpu_s, lost, records))
                    print(
                        f"{name:<9} {capture.rate_label(rate):>5} {records:>9,} {lost:>7,} "
                        f"{cpu_s:>6.2f} {cpu_s / records * 1e6:>7.2f} "
                        f"{sleeps / records * 1e3:>13.1f}",
                        flush=True,
                    )
    print("\nmean over rounds: capture CPU µs per record (lost records, all rounds)")
    for (name, rate), runs in results.items():
        cpu = sum(run[0] for run in runs) / sum(run[2] for run in runs) * 1e6
        lost = sum(run[1] for run in runs)
        print(f"{name:<9} {capture.rate_label(rate):>5} {cpu:.2f} µs/record ({lost:,} lost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
