"""Capture under a flood: records injected into the real /dev/kmsg, ours vs rsyslog imkmsg.

    .venv/bin/python bench/capture_bench.py [--rates 30k,100k,300k,1M] [--runs 5]
        [--records 200000] [--no-rsyslog]

Needs root (it sets kernel.printk_devkmsg=on for the bench and restores the previous value
even on failure) and gcc. For each rate, the forwarder (``kmsg-forwarder run`` with a file
sink, start_at = "newest", a fresh state dir) and then Debian's rsyslogd (foreground, a
private config loading only imkmsg and writing to a file; no /dev/log, no systemd) each
receive ``--records`` records written by bench/inject.c (one write() per record, paced
by busy-waiting) while they run alone (2 cores: never both at once). The rate the
requirement names (300k/s) gets ``--runs`` runs, the others one.

Each record's text is 60 bytes, so the 128 KiB ring holds ~1,800 of them. The injector
runs at normal priority (``--injector-rt``: real-time): on a busy machine it falls short
of the target rate, so every run prints the rate it achieved.

Counted: distinct records of the run's tag in the output file (received), injected minus
that (lost) and, for ours, the sum of ``lost`` in the gap events it wrote (must equal lost
when no other process floods the ring at the same time). CPU seconds per million records
and peak RSS (VmHWM) are for the forwarder and its capture process together, resp.
rsyslogd, from /proc: CPU from just before injecting to the last record written (start-up
and shutdown excluded); "capture" is the capture process alone. "inj CPU" is the
injector's CPU seconds, "others" the mean CPUs busy with anything else on the machine
while injecting (other people's work skews a run: it says how much).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from forwarder.source.ring import ring_bounds

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "out"
INJECTOR_SOURCE = HERE / "inject.c"
INJECTOR = OUT_DIR / "inject"
FORWARDER = Path(sys.executable).parent / "kmsg-forwarder"
KMSG = Path("/dev/kmsg")
DEVKMSG_SYSCTL = Path("/proc/sys/kernel/printk_devkmsg")
REQUIRED_RATE = 300_000
READY_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_S = 180.0
TEXT_BYTES = 60  # a short kernel line; the 128 KiB ring then holds ~1,800 records
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TRACE_PERIOD_S = 0.5


@dataclass
class Run:
    """One flood received by one reader."""

    who: str
    rate: int
    injected: int = 0
    inject_s: float = 0.0
    received: int = 0
    gap_lost: int | None = None
    cpu_s: float = 0.0
    capture_cpu_s: float | None = None  # ours: the capture process alone
    injector_cpu_s: float = 0.0
    others_cores: float = 0.0  # mean CPU of everything else on the machine while injecting
    peak_rss_kib: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.injected - self.received

    @property
    def achieved_rate(self) -> float:
        return self.injected / self.inject_s if self.inject_s else 0.0

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_s / self.injected * 1e6 if self.injected else 0.0


# -- the machine ------------------------------------------------------------------------


def build_injector() -> None:
    """Compile bench/inject.c into bench/out/ (gitignored) when missing or older."""
    OUT_DIR.mkdir(exist_ok=True)
    if INJECTOR.exists() and INJECTOR.stat().st_mtime >= INJECTOR_SOURCE.stat().st_mtime:
        return
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("gcc is needed to build bench/inject.c: apt-get install -y gcc")
    subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-o", INJECTOR, INJECTOR_SOURCE], check=True)


def find_rsyslogd() -> str | None:
    """Debian's rsyslogd, installed on demand (its service is never started: we run it)."""
    found = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin")
    if found is None:
        print("rsyslogd missing: apt-get install -y rsyslog", flush=True)
        environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=environment)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "rsyslog"],
            check=False,
            env=environment,
            stdout=subprocess.DEVNULL,
        )
        found = shutil.which("rsyslogd", path="/usr/sbin:/usr/bin")
    return found


@contextlib.contextmanager
def devkmsg_on() -> Iterator[None]:
    """kernel.printk_devkmsg=on (no write rate limit) for the bench; always restored."""
    previous = DEVKMSG_SYSCTL.read_text().strip()
    DEVKMSG_SYSCTL.write_text("on\n")  # the sysctl refuses a value without the newline
    try:
        yield
    finally:
        DEVKMSG_SYSCTL.write_text(previous + "\n")


def inject(run: Run, tag: str, count: int, reader_pids: list[int], *, realtime: bool) -> None:
    """Write ``count`` records ``<14>TAG-%08d`` at ``run.rate``; note what it cost around."""
    busy_before = machine_busy_s()
    reader_before = cpu_seconds(reader_pids)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [INJECTOR, tag, str(count), str(run.rate)]
    if realtime:
        command = ["chrt", "--rr", "1", *command]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reader_cpu_s = cpu_seconds(reader_pids) - reader_before
    busy_s = machine_busy_s() - busy_before
    if done.returncode != 0 or DEVKMSG_SYSCTL.read_text().strip() != "on":
        raise RuntimeError(
            f"injection failed or printk_devkmsg changed under us: {done.stderr.strip()}"
        )
    written, elapsed = done.stdout.split()
    run.injected, run.inject_s = int(written), float(elapsed)
    run.injector_cpu_s = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    run.others_cores = max(0.0, busy_s - reader_cpu_s - run.injector_cpu_s) / run.inject_s


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def write_marker(text: str) -> None:
    """One record, from a fresh open file."""
    fd = os.open(KMSG, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, f"<14>{text}\n".encode())
    finally:
        os.close(fd)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def peak_rss_kib(pids: list[int]) -> int:
    """Sum of VmHWM (peak resident set) of the processes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (the capture process of a forwarder)."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    return children


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- waiting on output files ------------------------------------------------------------


def wait_for_text(path: Path, needle: bytes, process: subprocess.Popen[bytes]) -> None:
    """Until ``needle`` is in the file (the reader is up and writing)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the reader exited ({process.returncode}) before it was ready")
        if path.exists() and needle in path.read_bytes():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{needle.decode()} did not reach {path} within {READY_TIMEOUT_S} s")


def wait_for_delivery(path: Path, last: bytes, idle_s: float) -> None:
    """Until the last injected record is written, or the file stops growing for ``idle_s``."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    offset, size, changed = 0, -1, time.monotonic()
    tail = b""
    while time.monotonic() < deadline:
        current = path.stat().st_size if path.exists() else 0
        if current != size:
            size, changed = current, time.monotonic()
            with path.open("rb") as output:
                output.seek(offset)
                chunk = tail + output.read()
            if last in chunk:
                return
            offset, tail = current, chunk[-256:]
        elif time.monotonic() - changed > idle_s:
            return
        time.sleep(0.05)


def tagged_seen(path: Path, tag: str) -> set[int]:
    """Distinct record numbers of this run's tag in an output file."""
    pattern = re.compile(re.escape(tag).encode() + rb"-(\d{8})")
    return {int(number) for number in pattern.findall(path.read_bytes())}


def gap_lost(path: Path) -> int:
    """Sum of ``lost`` over the gap events in the forwarder's NDJSON output."""
    lost = 0
    with path.open("rb") as output:
        for line in output:
            if b'"event":"gap"' in line:
                lost += int(json.loads(line)["lost"])
    return lost


# -- the readers ------------------------------------------------------------------------


FORWARDER_CONFIG = """\
state_dir = "{state}"
[source]
start_at = "newest"
{buffer}
[sinks.out]
type = "file"
path = "{output}"
{sink_options}
"""

RSYSLOG_CONFIG = """\
global(workDirectory="{work}")
module(load="imkmsg")
template(name="bench" type="string" string="%msg%\\n")
*.* action(type="omfile" file="{output}" template="bench")
"""


def run_ours(args: argparse.Namespace, rate: int, tag: str, workdir: Path) -> Run:
    """The forwarder with a file sink, from the newest record on."""
    run = Run("ours", rate)
    output = workdir / "out.ndjson"
    config = workdir / "forwarder.toml"
    buffer = "\n".join(
        f"{key} = {value}"
        for key, value in (
            ("buffer_records", args.buffer_records),
            ("buffer_bytes", args.buffer_bytes),
        )
        if value is not None
    )
    config.write_text(
        FORWARDER_CONFIG.format(
            state=workdir / "state",
            buffer=buffer,
            output=output,
            sink_options=getattr(args, "sink_options", ""),
        )
    )
    with (workdir / "forwarder.log").open("wb") as log:
        process = subprocess.Popen(
            [FORWARDER, "run", "--config", config, "--log-format", "json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # as a daemon runs: its own session (and sched autogroup)
        )
    try:
        _until_started(workdir / "forwarder.log", process)
        write_marker(f"{tag}-ready")
        wait_for_text(output, f"{tag}-ready".encode(), process)
        pids = [process.pid, *child_pids(process.pid)]
        if len(pids) != 2:
            run.notes.append(f"expected one capture process, found {len(pids) - 1}")
        cpu_before = cpu_seconds(pids)
        capture_before = cpu_seconds(pids[1:])
        with Timeline(getattr(args, "trace", None), pids, output):
            inject(run, tag, args.records, pids, realtime=args.injector_rt)
            wait_for_delivery(output, f"{tag}-{args.records - 1:08d}".encode(), args.idle_s)
        run.cpu_s = cpu_seconds(pids) - cpu_before
        run.capture_cpu_s = cpu_seconds(pids[1:]) - capture_before
        run.peak_rss_kib = peak_rss_kib(pids)
    finally:
        stop(process)
    if process.returncode != 0:
        run.notes.append(f"forwarder exited {process.returncode}")
    run.received = len(tagged_seen(output, tag) & set(range(args.records)))
    run.gap_lost = gap_lost(output)
    return run


class Timeline:
    """Samples both processes every ``TRACE_PERIOD_S`` into a CSV file (nothing without a path).

    Columns: seconds since the start, CPU seconds of the forwarder and of its capture
    process, the seconds their threads waited for a CPU while runnable (schedstat: a process
    starved of CPU waits here, one waiting for fsync does not), their RSS in MiB (the
    capture buffer's memory comes and goes with its backlog), and the output file's size in
    MB (what the forwarder has delivered).
    """

    def __init__(self, path: Path | None, pids: list[int], output: Path) -> None:
        self._path, self._pids, self._output = path, pids, output
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Self:
        if self._path is not None:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        if self._path is not None:
            self._thread.join(timeout=10)

    def _sample(self) -> None:
        assert self._path is not None
        started = time.monotonic()
        with self._path.open("w") as trace:
            trace.write(
                "t_s,main_cpu_s,capture_cpu_s,main_runq_wait_s,capture_runq_wait_s,"
                "main_rss_mib,capture_rss_mib,output_mb\n"
            )
            while not self._done.wait(TRACE_PERIOD_S):
                size = self._output.stat().st_size if self._output.exists() else 0
                cells = [time.monotonic() - started]
                cells += [cpu_seconds([pid]) for pid in self._pids]
                cells += [runqueue_wait_s(pid) for pid in self._pids]
                cells += [rss_kib(pid) / 1024 for pid in self._pids]
                trace.write(",".join(f"{cell:.2f}" for cell in [*cells, size / 1e6]) + "\n")
                trace.flush()


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but not running (/proc/PID/task/*/schedstat)."""
    waited_ns = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                waited_ns += int((task / "schedstat").read_text().split()[1])
    return waited_ns / 1e9


def rss_kib(pid: int) -> int:
    """VmRSS of the process (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _until_started(log_path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"forwarder exited: {log_path.read_text()[-2000:]}")
        if b'"event": "started"' in log_path.read_bytes():
            return
        time.sleep(0.05)
    raise RuntimeError("forwarder did not start")


def run_rsyslog(args: argparse.Namespace, rsyslogd: str, rate: int, tag: str, workdir: Path) -> Run:
    """rsyslogd -n with only imkmsg and omfile (it reads the ring from the oldest record)."""
    run = Run("rsyslog", rate)
    output = workdir / "rsyslog.out"
    config = workdir / "rsyslog.conf"
    (workdir / "work").mkdir()
    config.write_text(RSYSLOG_CONFIG.format(work=workdir / "work", output=output))
    with (workdir / "rsyslog.log").open("wb") as log:
        process = subprocess.Popen(
            [rsyslogd, "-n", "-f", config, "-i", workdir / "rsyslogd.pid"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        time.sleep(0.2)  # imkmsg opens /dev/kmsg as it starts; the marker is read either way
        write_marker(f"{tag}-ready")
        wait_for_text(output, f"{tag}-ready".encode(), process)
        cpu_before = cpu_seconds([process.pid])
        inject(run, tag, args.records, [process.pid], realtime=args.injector_rt)
        wait_for_delivery(output, f"{tag}-{args.records - 1:08d}".encode(), args.idle_s)
        run.cpu_s = cpu_seconds([process.pid]) - cpu_before
        run.peak_rss_kib = peak_rss_kib([process.pid])
    finally:
        stop(process)
    run.received = len(tagged_seen(output, tag) & set(range(args.records)))
    return run


# -- the report -------------------------------------------------------------------------


def record_tag(name: str) -> str:
    """``name`` padded so that each record's text is TEXT_BYTES long."""
    return name.ljust(TEXT_BYTES - len("-00000000"), "x")


def parse_rate(text: str) -> int:
    """30k, 1M, 300000."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def rate_label(rate: float) -> str:
    return f"{rate / 1e6:g}M" if rate >= 1e6 else f"{rate / 1e3:g}k"


def print_header() -> None:
    print(
        f"{'reader':<8} {'rate':>5} {'achieved/s':>10} {'injected':>9} {'received':>9} "
        f"{'lost':>7} {'lost %':>7} {'gap lost':>8} {'CPU s/M':>8} {'capture':>7} {'RSS MiB':>8} "
        f"{'inj CPU':>7} {'others':>6}  notes",
        flush=True,
    )


def print_runs(runs: list[Run]) -> None:
    for run in runs:
        gap = "" if run.gap_lost is None else str(run.gap_lost)
        capture = (
            "" if run.capture_cpu_s is None else f"{run.capture_cpu_s / run.injected * 1e6:.2f}"
        )
        print(
            f"{run.who:<8} {rate_label(run.rate):>5} {run.achieved_rate:>10,.0f} "
            f"{run.injected:>9,} {run.received:>9,} {run.lost:>7,} "
            f"{100 * run.lost / max(run.injected, 1):>6.2f}% {gap:>8} "
            f"{run.cpu_s_per_million:>8.2f} {capture:>7} {run.peak_rss_kib / 1024:>8.1f} "
            f"{run.injector_cpu_s:>7.2f} {run.others_cores:>6.2f}  {'; '.join(run.notes)}",
            flush=True,
        )


def print_summary(rates: list[int], runs: list[Run]) -> None:
    """Side by side per target rate: each reader's worst run, and its cost."""
    print("\nsummary: worst run per rate and reader; achieved = slowest injection of the runs;")
    print("CPU = mean over runs (forwarder + capture process, resp. rsyslogd); RSS = max VmHWM")
    header = "| rate |"
    for who in ("ours", "rsyslog"):
        header += (
            f" {who}: runs | achieved/s | injected | received | lost | CPU s/M | peak RSS MiB |"
        )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for rate in rates:
        line = f"| {rate_label(rate)} |"
        for who in ("ours", "rsyslog"):
            theirs = [run for run in runs if run.rate == rate and run.who == who]
            if not theirs:
                line += " 0 | - | - | - | - | - | - |"
                continue
            worst = max(theirs, key=lambda run: run.lost)
            achieved = min(run.achieved_rate for run in theirs)
            cpu = sum(run.cpu_s_per_million for run in theirs) / len(theirs)
            rss = max(run.peak_rss_kib for run in theirs) / 1024
            line += (
                f" {len(theirs)} | {achieved:,.0f} | {worst.injected:,} | {worst.received:,} | "
                f"{worst.lost:,} ({100 * worst.lost / max(worst.injected, 1):.2f}%) | "
                f"{cpu:.1f} | {rss:.0f} |"
            )
        print(line)


def main() -> int:
    """Run the bench and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="30k,100k,300k,1M", help="records/s, e.g. 30k,1M")
    parser.add_argument("--runs", type=int, default=5, help=f"runs at {REQUIRED_RATE:,}/s")
    parser.add_argument("--records", type=int, default=200_000, help="records per run")
    parser.add_argument("--buffer-records", type=int, default=None, help="default: no bound")
    parser.add_argument("--buffer-bytes", type=int, default=None, help="default: the forwarder's")
    parser.add_argument("--idle-s", type=float, default=3.0, help="a reader idle this long is done")
    parser.add_argument("--no-rsyslog", action="store_true")
    parser.add_argument(
        "--sink-options",
        default="",
        help='TOML after the file sink table, e.g. "[spool]\\nenabled = false" (comparisons)',
    )
    parser.add_argument(
        "--injector-rt",
        action="store_true",
        help="run the injector at SCHED_RR 1, so that it reaches the rate on a busy machine",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it writes kernel.printk_devkmsg and injects into /dev/kmsg")
    rates = [parse_rate(text) for text in args.rates.split(",")]
    build_injector()
    rsyslogd = None if args.no_rsyslog else find_rsyslogd()
    if rsyslogd is None and not args.no_rsyslog:
        print("rsyslogd unavailable: comparing nothing", flush=True)
    print(
        f"kernel {os.uname().release}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.records:,} records per run, buffer_records={args.buffer_records}, "
        f"buffer_bytes={args.buffer_bytes or 'default'}, "
        f"injector {'SCHED_RR 1' if args.injector_rt else 'normal priority'}",
        flush=True,
    )
    print_header()
    runs: list[Run] = []
    stamp = f"{os.getpid() % 10_000:04d}"
    with devkmsg_on(), tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        for rate in rates:
            repeats = args.runs if rate == REQUIRED_RATE else 1
            for number in range(repeats):
                for who in ("ours", "rsyslog"):
                    if who == "rsyslog" and rsyslogd is None:
                        continue
                    tag = record_tag(f"cb{stamp}-{who}-{rate_label(rate)}-run{number}")
                    workdir = Path(tmp) / tag
                    workdir.mkdir()
                    if who == "ours":
                        run = run_ours(args, rate, tag, workdir)
                    else:
                        assert rsyslogd is not None
                        run = run_rsyslog(args, rsyslogd, rate, tag, workdir)
                    runs.append(run)
                    print_runs([run])
        oldest, newest = ring_bounds(KMSG)
    if oldest is not None and newest is not None:
        print(f"\nthe ring holds {newest - oldest + 1:,} records like the last ones injected")
    print_summary(rates, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
