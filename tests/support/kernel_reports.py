"""Make the real kernel report things, and undo exactly what each report needed.

Five reports (FACTS.md, "Making the kernel itself report things"; formats in
../shared/kernel-events/SPEC.md): an OOM kill in a memory cgroup, a segfault, a hung task
on a frozen ext4 loop mount, an ext4 error with the read-only remount, and a netfilter LOG
record on loopback. Each context manager makes its report happen on entry and yields what
it made; on exit it undoes that, and only that (its children by pid, its cgroup, loop
device, mount point and iptables rule by name, the sysctls it changed back to their saved
values), through an :class:`~contextlib.ExitStack`, so a failure half-way still undoes
every step taken so far. Nothing is skipped: a machine that cannot make a report fails the
test with what is missing (``make test`` installs the tools, ``make system-deps``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from forwarder.kernel_events import KernelEvent, KernelEventClassifier
from forwarder.source.parser import Record, parse_record
from tests.support.wait import wait_until

KMSG = Path("/dev/kmsg")
PROC_SYS = Path("/proc/sys")
READ_BUFFER_BYTES = 16384
POLL_INTERVAL_MS = 20
# A kern record's prefix (0 << 3 | level) is one digit 0-7 then a comma: others stay unparsed.
_KERN_PREFIX_DIGITS = frozenset(b"01234567")
CHILD_EXIT_TIMEOUT_S = 20
# Children name themselves with prctl(PR_SET_NAME), like the tests' unique tags.
_NAME_SELF = "import ctypes,sys; ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n"
_ALLOCATE_UNTIL_KILLED = _NAME_SELF + (
    "from pathlib import Path\n"
    "import os\n"
    "Path(sys.argv[2]).write_text(str(os.getpid()))\n"
    "hog = []\n"
    "for _ in range(int(sys.argv[3])):\n"
    "    hog.append(b'\\x01' * (1 << 20))\n"
    "sys.exit(3)  # never killed: the limit did not hold, and the host's memory is not ours\n"
)
_READ_NULL = _NAME_SELF + (
    "import faulthandler, resource\n"
    "faulthandler.disable()\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "ctypes.string_at(0)\n"
)
_WRITE_AND_FSYNC = _NAME_SELF + (
    "import os\n"
    "fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o600)\n"
    "os.write(fd, b'blocked')\n"
    "os.fsync(fd)\n"
)
_LIST_DIRECTORY = _NAME_SELF + (
    "import os\n"
    "try:\n"
    "    os.listdir(sys.argv[2])\n"
    "except OSError as error:\n"
    "    sys.exit(error.errno)\n"
)


def comm_tag(prefix: str = "kr") -> str:
    """A process name no other run uses, short enough for the kernel's 15-byte comm."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _run(*args: str) -> str:
    """Run a tool; its stdout, or a failure that says what the tool said."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError as error:
        raise AssertionError(f"{args[0]} is missing: `make system-deps` installs it") from error
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# --- reading the ring ---------------------------------------------------------------------


class KernelLog:
    """The kern records the kernel logs from now on: a tail of /dev/kmsg opened at its end.

    A thread drains the device as records come, since other suites on this machine may
    flood the ring (about 2,000 records, FACTS.md) faster than a test polls. Only facility
    kern is kept: the classifier ignores every other record.
    """

    def __init__(self, path: Path = KMSG) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self._fd, 0, os.SEEK_END)
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.overruns = 0
        self._reader = threading.Thread(target=self._drain_until_stopped, daemon=True)
        self._reader.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._reader.join(timeout=CHILD_EXIT_TIMEOUT_S)
        os.close(self._fd)

    @property
    def records(self) -> list[Record]:
        """The kern records read so far, in seq order."""
        with self._lock:
            return list(self._records)

    def _drain_until_stopped(self) -> None:
        # Real-time (like the forwarder's capture) so a flooding neighbour cannot starve the
        # reader while the ring turns over; it sleeps in poll() whenever it has caught up.
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))  # 0: this thread only
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            poller.poll(POLL_INTERVAL_MS)
            while True:
                try:
                    raw = os.read(self._fd, READ_BUFFER_BYTES)
                except BlockingIOError:
                    break
                except BrokenPipeError:
                    self.overruns += 1  # a flood overwrote records before we read them
                    continue
                if raw[1:2] == b"," and raw[0] in _KERN_PREFIX_DIGITS:
                    record = parse_record(raw)
                    with self._lock:
                        self._records.append(record)

    def wait_for(
        self, predicate: Callable[[Record], bool], *, what: str, timeout_s: float = 20
    ) -> Record:
        """The first kern record matching ``predicate``, waiting (bounded) for it."""

        def found() -> Record | None:
            return next((r for r in self.records if predicate(r)), None)

        record = wait_until(
            found, timeout_s=timeout_s, what=f"kernel record {what} ({self.overruns} overruns)"
        )
        assert record is not None  # wait_until returns only a truthy value
        return record

    def wait_for_text(self, text: str, *, timeout_s: float = 20) -> Record:
        """The first kern record containing ``text``."""
        return self.wait_for(lambda r: text in r.message, what=repr(text), timeout_s=timeout_s)


def classify(records: list[Record]) -> list[KernelEvent]:
    """Every kernel event a fresh classifier makes of ``records`` (flushed at the end)."""
    boot_id = (PROC_SYS / "kernel" / "random" / "boot_id").read_text().strip()
    classifier = KernelEventClassifier(host="test", boot_id=boot_id, clock_offset_ns=0)
    events = [event for record in records for event in classifier.feed(record)]
    return events + classifier.flush()


# --- sysctls and children -------------------------------------------------------------------


def read_sysctl(name: str) -> str:
    """A sysctl's value as /proc/sys prints it (tabs between the numbers of a vector)."""
    return (PROC_SYS / name.replace(".", "/")).read_text().strip()


@contextmanager
def sysctl(name: str, value: str) -> Iterator[str]:
    """Set a sysctl for the block, then write back the value it had; yields the old value.

    The sysctl's /proc file is flock()ed meanwhile: suites of other worktrees running at the
    same time wait, so none saves the value another one set and "restores" that.
    """
    path = PROC_SYS / name.replace(".", "/")
    with _exclusive(path):
        old = read_sysctl(name)
        path.write_text(f"{value}\n")
        try:
            yield old
        finally:
            path.write_text(f"{old}\n")


@contextmanager
def _exclusive(path: Path, timeout_s: float = 20) -> Iterator[None]:
    """Hold an flock on ``path`` (waiting, bounded, while another process holds it)."""
    fd = os.open(path, os.O_RDONLY)
    try:

        def locked() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        wait_until(locked, timeout_s=timeout_s, interval_s=0.1, what=f"flock on {path}")
        yield
    finally:
        os.close(fd)  # releases the lock


class Children:
    """Children started for a report; :meth:`reap` kills (by pid) and waits for each."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, program: str, *args: str) -> subprocess.Popen[bytes]:
        """Run ``python -c program args`` with output captured; no faulthandler inherited."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
        child = subprocess.Popen(
            [sys.executable, "-c", program, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        self._started.append(child)
        return child

    def reap(self) -> None:
        """SIGKILL every child still running, by pid, and wait (bounded) for all of them."""
        for child in self._started:
            if child.poll() is None:
                child.kill()
        for child in self._started:
            child.communicate(timeout=CHILD_EXIT_TIMEOUT_S)


def process_state(pid: int) -> str:
    """The one-letter state of a process (``D``: uninterruptible sleep), '' once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    return stat.rpartition(")")[2].split()[0]


def _exit_of(child: subprocess.Popen[bytes]) -> int:
    try:
        return child.wait(timeout=CHILD_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"child {child.pid} did not end within {error.timeout} s") from error


# --- OOM kill in a memory cgroup ------------------------------------------------------------


@dataclass(frozen=True)
class MemoryCgroupRoot:
    """Where this machine's memory controller is mounted, and which cgroup version it is."""

    path: Path
    version: int


@dataclass(frozen=True)
class OomKill:
    """An OOM kill the kernel made and logged: the victim and the cgroup it ran in."""

    pid: int
    comm: str
    cgroup_dir: Path
    memcg: str  # the path the kernel prints: "/<name>" below the controller's root
    limit_bytes: int


def memory_cgroup_root() -> MemoryCgroupRoot:
    """The memory controller: cgroup v2 (memory delegated to children) or v1."""
    for path in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        with suppress(OSError):
            if "memory" in (path / "cgroup.subtree_control").read_text().split():
                return MemoryCgroupRoot(path, 2)
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists():
        return MemoryCgroupRoot(v1, 1)
    raise AssertionError(
        "no memory cgroup: neither cgroup v2 with 'memory' in cgroup.subtree_control nor v1 "
        "at /sys/fs/cgroup/memory"
    )


def _limit_memory(cgroup: Path, version: int, limit_bytes: int) -> None:
    """A hard limit and no swap, so the cgroup's OOM killer runs once the limit is hit."""
    if version == 2:
        (cgroup / "memory.max").write_text(f"{limit_bytes}\n")
        swap = cgroup / "memory.swap.max"
        if swap.exists():  # absent when the kernel accounts no swap
            swap.write_text("0\n")
    else:
        (cgroup / "memory.limit_in_bytes").write_text(f"{limit_bytes}\n")
        memsw = cgroup / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # swap accounting on: memory+swap capped at the same value
            memsw.write_text(f"{limit_bytes}\n")


def _remove_cgroup(cgroup: Path) -> None:
    """Kill what is left in the cgroup (by pid), then remove it, waiting while it drains."""

    def removed() -> bool:
        for pid in (cgroup / "cgroup.procs").read_text().split():
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        try:
            cgroup.rmdir()
        except OSError as error:
            if error.errno == errno.EBUSY:
                return False
            raise
        return True

    wait_until(removed, timeout_s=CHILD_EXIT_TIMEOUT_S, what=f"rmdir {cgroup}")


@contextmanager
def oom_kill(comm: str, *, limit_bytes: int = 32 << 20) -> Iterator[OomKill]:
    """A child named ``comm`` allocates in a fresh memory cgroup until the kernel kills it."""
    root = memory_cgroup_root()
    cgroup = root.path / f"kmsg-forwarder-{comm}"
    with ExitStack() as undo:
        cgroup.mkdir()
        undo.callback(_remove_cgroup, cgroup)
        _limit_memory(cgroup, root.version, limit_bytes)
        children = Children()
        undo.callback(children.reap)
        child = children.start(
            _ALLOCATE_UNTIL_KILLED,
            comm,
            str(cgroup / "cgroup.procs"),
            str(8 * limit_bytes >> 20),  # MiB allocated at most
        )
        code = _exit_of(child)
        if code != -signal.SIGKILL:
            _, stderr = child.communicate()
            raise AssertionError(f"the OOM child ended with {code}, not SIGKILL: {stderr!r}")
        yield OomKill(child.pid, comm, cgroup, f"/{cgroup.name}", limit_bytes)


# --- segfault -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segfault:
    """A child that read address 0 and died of SIGSEGV."""

    pid: int
    comm: str


@contextmanager
def segfault(comm: str, *, fatal_signal_dump: bool = False) -> Iterator[Segfault]:
    """A child named ``comm`` reads NULL; ``debug.exception-trace=1`` makes the kernel say so.

    ``fatal_signal_dump`` sets ``kernel.print-fatal-signals``: when on, the kernel follows
    the segfault line with "potentially unexpected fatal signal 11." and a register dump.
    """
    with ExitStack() as undo:
        # show_unhandled_signals: the "segfault at" line is printed only when it is 1.
        undo.enter_context(sysctl("debug.exception-trace", "1"))
        undo.enter_context(sysctl("kernel.print-fatal-signals", "1" if fatal_signal_dump else "0"))
        children = Children()
        undo.callback(children.reap)
        child = children.start(_READ_NULL, comm)
        code = _exit_of(child)
        if code != -signal.SIGSEGV:
            _, stderr = child.communicate()
            raise AssertionError(f"the NULL reader ended with {code}, not SIGSEGV: {stderr!r}")
        yield Segfault(child.pid, comm)


# --- ext4 on a loop device ------------------------------------------------------------------


@dataclass(frozen=True)
class LoopFilesystem:
    """An ext4 image attached to a loop device and mounted."""

    image: Path
    device: Path  # /dev/loopN
    mountpoint: Path

    @property
    def name(self) -> str:
        """The name the kernel prints (``loopN``)."""
        return self.device.name


def make_ext4_image(image: Path, *, size_bytes: int = 32 << 20, source: Path | None = None) -> None:
    """A sparse file holding a fresh ext4 filesystem, populated from ``source`` if given."""
    with image.open("wb") as file:
        file.truncate(size_bytes)
    populate = ("-d", str(source)) if source is not None else ()
    _run("mkfs.ext4", "-q", "-F", *populate, str(image))


def attached_devices(image: Path) -> list[str]:
    """Loop devices backed by ``image`` (empty once it is detached)."""
    return [line.split(":", 1)[0] for line in _run("losetup", "-j", str(image)).splitlines()]


def mounted(mountpoint: Path) -> bool:
    """Whether anything is mounted at ``mountpoint``."""
    target = str(mountpoint)
    with Path("/proc/self/mountinfo").open() as mountinfo:
        return any(line.split()[4] == target for line in mountinfo)


@contextmanager
def loop_mount(image: Path, mountpoint: Path, options: str = "") -> Iterator[LoopFilesystem]:
    """Attach ``image`` to a free loop device and mount it; unmount and detach after."""
    with ExitStack() as undo:
        device = Path(_run("losetup", "--find", "--show", str(image)).strip())
        undo.callback(_run, "losetup", "-d", str(device))
        mountpoint.mkdir(exist_ok=True)
        _run(
            "mount",
            "-t",
            "ext4",
            *(("-o", options) if options else ()),
            str(device),
            str(mountpoint),
        )
        undo.callback(_run, "umount", str(mountpoint))
        yield LoopFilesystem(image, device, mountpoint)


# --- hung task ------------------------------------------------------------------------------

HUNG_TASK_SYSCTLS = ("kernel.hung_task_timeout_secs", "kernel.hung_task_warnings")


@dataclass(frozen=True)
class HungTask:
    """A child blocked in D state writing to a frozen filesystem."""

    pid: int
    comm: str
    filesystem: LoopFilesystem
    timeout_s: int


@contextmanager
def hung_task(
    comm: str, workdir: Path, *, timeout_s: int = 2, reports: int = 1
) -> Iterator[HungTask]:
    """A child named ``comm`` blocks on a frozen ext4; the detector reports it ``reports`` times.

    ``kernel.hung_task_warnings`` is how many more reports the kernel prints (it counts
    down, and earlier runs may have left it at 0); with 1 the one report ends with "Future
    hung task reports are suppressed". Undo order: thaw, reap the child, sysctls, unmount,
    detach.
    """
    image = workdir / f"{comm}.ext4"
    make_ext4_image(image)
    with ExitStack() as undo:
        filesystem = undo.enter_context(loop_mount(image, workdir / f"{comm}.mnt"))
        undo.enter_context(sysctl("kernel.hung_task_warnings", str(reports)))
        undo.enter_context(sysctl("kernel.hung_task_timeout_secs", str(timeout_s)))
        children = Children()
        undo.callback(children.reap)  # after the thaw: a task in D state cannot die
        _run("fsfreeze", "-f", str(filesystem.mountpoint))
        undo.callback(_run, "fsfreeze", "-u", str(filesystem.mountpoint))
        child = children.start(_WRITE_AND_FSYNC, comm, str(filesystem.mountpoint / "blocked"))
        wait_until(
            lambda: process_state(child.pid) == "D",
            timeout_s=CHILD_EXIT_TIMEOUT_S,
            what=f"{comm} ({child.pid}) in D state",
        )
        yield HungTask(child.pid, comm, filesystem, timeout_s)


# --- ext4 error and read-only remount -------------------------------------------------------


@dataclass(frozen=True)
class Ext4Error:
    """A lookup that found a cleared inode on a filesystem mounted errors=remount-ro."""

    pid: int
    comm: str
    filesystem: LoopFilesystem
    cleared_inode: int
    directory: str


@contextmanager
def ext4_error(comm: str, workdir: Path) -> Iterator[Ext4Error]:
    """``debugfs clri`` a directory, mount errors=remount-ro, a child named ``comm`` lists it."""
    directory = "victim"
    tree = workdir / f"{comm}.tree"
    (tree / directory).mkdir(parents=True)
    for index in range(3):
        (tree / directory / f"file{index}").write_text(f"{comm} {index}\n")
    image = workdir / f"{comm}.ext4"
    make_ext4_image(image, source=tree)
    stat = _run("debugfs", "-R", f"stat /{directory}", str(image))
    inode = re.search(r"Inode: (\d+)", stat)
    assert inode is not None, f"debugfs stat printed no inode: {stat!r}"
    _run("debugfs", "-w", "-R", f"clri /{directory}", str(image))
    with ExitStack() as undo:
        filesystem = undo.enter_context(
            loop_mount(image, workdir / f"{comm}.mnt", "errors=remount-ro")
        )
        children = Children()
        undo.callback(children.reap)
        child = children.start(_LIST_DIRECTORY, comm, str(filesystem.mountpoint / directory))
        code = _exit_of(child)
        if code == 0:
            raise AssertionError(f"listing the cleared directory succeeded on {filesystem.name}")
        yield Ext4Error(child.pid, comm, filesystem, int(inode[1]), directory)


# --- netfilter LOG on loopback --------------------------------------------------------------


@dataclass(frozen=True)
class NetfilterLog:
    """One UDP datagram on lo that an iptables LOG rule with a unique prefix logged."""

    prefix: str
    chain: str
    sport: int
    dport: int
    payload_bytes: int
    rule: tuple[str, ...]


def iptables_rules() -> str:
    """``iptables -S``: every rule of the filter table, as the commands that add them."""
    return _run("iptables", "-w", "-S")


@contextmanager
def netfilter_log(
    tag: str, *, chain: str = "OUTPUT", payload: bytes = b"kmsg-forwarder"
) -> Iterator[NetfilterLog]:
    """Log one loopback UDP datagram with prefix ``[tag] `` in ``chain`` (OUTPUT or INPUT).

    On OUTPUT the kernel prints ``IN= OUT=lo``; on INPUT ``IN=lo OUT= MAC=...`` (the packet
    has an input device). The rule matches only this datagram's ports and is deleted after.
    """
    interface = {"OUTPUT": "-o", "INPUT": "-i"}[chain]
    prefix = f"[{tag}] "
    with ExitStack() as undo:
        receiver = undo.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        receiver.bind(("127.0.0.1", 0))
        sender = undo.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sender.bind(("127.0.0.1", 0))
        dport, sport = receiver.getsockname()[1], sender.getsockname()[1]
        rule = (
            chain, interface, "lo", "-p", "udp", "-s", "127.0.0.1", "-d", "127.0.0.1",
            "--sport", str(sport), "--dport", str(dport), "-j", "LOG", "--log-prefix", prefix,
        )  # fmt: skip
        _run("iptables", "-w", "-I", *rule)
        undo.callback(_run, "iptables", "-w", "-D", *rule)
        sender.sendto(payload, ("127.0.0.1", dport))
        receiver.settimeout(CHILD_EXIT_TIMEOUT_S)
        assert receiver.recv(len(payload) + 1) == payload
        yield NetfilterLog(prefix, chain, sport, dport, len(payload), rule)
