"""Make the real kernel report things, and undo exactly what each report needed.

Five reports (FACTS.md, "Making the kernel itself report things"; formats in
../shared/kernel-events/SPEC.md): an OOM kill in a memory cgroup, a segfault (and CPU traps), a hung task
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
import os
import re
import select
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.machine import (
    CHILD_EXIT_TIMEOUT_S,
    Children,
    LoopFilesystem,
    exit_of,
    loop_mount,
    make_ext4_image,
    process_state,
    run_tool,
    sysctl,
)
from tests.support.wait import wait_until

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
_HOLD_AND_SLEEP = _NAME_SELF + (
    "from pathlib import Path\n"
    "import os, time\n"
    "Path(sys.argv[2]).write_text(str(os.getpid()))\n"
    "hog = [b'\\x01' * (1 << 20) for _ in range(int(sys.argv[3]))]\n"
    "print('holding', flush=True)\n"
    "time.sleep(600)\n"
)
_READ_NULL = _NAME_SELF + (
    "import faulthandler, resource\n"
    "faulthandler.disable()\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "ctypes.string_at(0)\n"
)
_RUN_MACHINE_CODE = _NAME_SELF + (
    "import faulthandler, mmap, resource\n"
    "faulthandler.disable()\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
    "page.write(bytes.fromhex(sys.argv[2]))\n"
    "ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()\n"
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


# --- OOM kill in a memory cgroup ------------------------------------------------------------


@dataclass(frozen=True)
class MemoryCgroupRoot:
    """Where this machine's memory controller is mounted, and which cgroup version it is."""

    path: Path
    version: int


@dataclass(frozen=True)
class OomKill:
    """An OOM kill the kernel made and logged: the victim, who triggered it, the cgroup."""

    pid: int
    comm: str
    cgroup_dir: Path
    memcg: str  # the path the kernel prints: "/<name>" below the controller's root
    limit_bytes: int
    trigger_pid: int
    trigger_comm: str


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
def oom_kill(
    comm: str, *, limit_bytes: int = 32 << 20, bystander: str | None = None
) -> Iterator[OomKill]:
    """A child named ``comm`` allocates in a fresh memory cgroup until the kernel kills it.

    With a ``bystander``, a child of that name first takes 5/8 of the limit and sleeps;
    ``comm`` then allocates up to half the limit: its allocation triggers the OOM killer,
    which kills the bystander (the larger task), and ``comm`` lives on.
    """
    root = memory_cgroup_root()
    cgroup = root.path / f"kmsg-forwarder-{comm}"
    procs = str(cgroup / "cgroup.procs")
    limit_mib = limit_bytes >> 20
    with ExitStack() as undo:
        cgroup.mkdir()
        undo.callback(_remove_cgroup, cgroup)
        _limit_memory(cgroup, root.version, limit_bytes)
        children = Children()
        undo.callback(children.reap)
        victim = None
        if bystander is not None:
            victim = children.start(_HOLD_AND_SLEEP, bystander, procs, str(limit_mib * 5 // 8))
            _wait_for_output(victim, b"holding")
        cap_mib = limit_mib // 2 if victim else 8 * limit_mib  # the trigger's most
        trigger = children.start(_ALLOCATE_UNTIL_KILLED, comm, procs, str(cap_mib))
        trigger_code = exit_of(trigger)
        if victim is None:
            victim, expected = trigger, -signal.SIGKILL
        else:
            victim_code = exit_of(victim)
            assert victim_code == -signal.SIGKILL, f"the bystander ended with {victim_code}"
            expected = 3  # allocated its most and left
        if trigger_code != expected:
            _, stderr = trigger.communicate()
            raise AssertionError(f"the OOM child ended with {trigger_code}: {stderr!r}")
        yield OomKill(
            victim.pid,
            bystander or comm,
            cgroup,
            f"/{cgroup.name}",
            limit_bytes,
            trigger.pid,
            comm,
        )


def _wait_for_output(child: subprocess.Popen[bytes], line: bytes) -> None:
    """Wait (bounded) until ``child`` prints ``line``; fail if it ends first."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], CHILD_EXIT_TIMEOUT_S)
    got = child.stdout.readline() if ready else b""
    assert got.strip() == line, f"child {child.pid} printed {got!r}, not {line!r}"


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
        code = exit_of(child)
        if code != -signal.SIGSEGV:
            _, stderr = child.communicate()
            raise AssertionError(f"the NULL reader ended with {code}, not SIGSEGV: {stderr!r}")
        yield Segfault(child.pid, comm)


# --- CPU traps in user mode ----------------------------------------------------------------

# x86-64 code run from the start of an anonymous page; the kernel prints its own name for the
# trap (arch/x86/kernel/traps.c) and the signal the child dies of.
# trap: (code, the signal it kills with, offset of the faulting instruction)
TRAPS = {
    "invalid opcode": ("0f0b", signal.SIGILL, 0),  # ud2
    "divide error": ("31c9f7f1c3", signal.SIGFPE, 2),  # xor ecx,ecx; div ecx
    "general protection fault": ("f4", signal.SIGSEGV, 0),  # hlt: privileged
}


@dataclass(frozen=True)
class CpuTrap:
    """A child that ran an instruction the CPU refused in user mode."""

    pid: int
    comm: str
    trap: str
    fault_offset: int  # of the faulting instruction, from the start of its page


@contextmanager
def cpu_trap(comm: str, trap: str) -> Iterator[CpuTrap]:
    """A child named ``comm`` runs code that raises ``trap`` (a key of TRAPS) and dies of it."""
    code, signum, fault_offset = TRAPS[trap]
    with ExitStack() as undo:
        undo.enter_context(sysctl("debug.exception-trace", "1"))
        undo.enter_context(sysctl("kernel.print-fatal-signals", "0"))
        children = Children()
        undo.callback(children.reap)
        child = children.start(_RUN_MACHINE_CODE, comm, code)
        exit_code = exit_of(child)
        if exit_code != -signum:
            _, stderr = child.communicate()
            raise AssertionError(f"the {trap} child ended with {exit_code}: {stderr!r}")
        yield CpuTrap(child.pid, comm, trap, fault_offset)


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
        run_tool("fsfreeze", "-f", str(filesystem.mountpoint))
        undo.callback(run_tool, "fsfreeze", "-u", str(filesystem.mountpoint))
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
    stat = run_tool("debugfs", "-R", f"stat /{directory}", str(image))
    inode = re.search(r"Inode: (\d+)", stat)
    assert inode is not None, f"debugfs stat printed no inode: {stat!r}"
    run_tool("debugfs", "-w", "-R", f"clri /{directory}", str(image))
    with ExitStack() as undo:
        filesystem = undo.enter_context(
            loop_mount(image, workdir / f"{comm}.mnt", "errors=remount-ro")
        )
        children = Children()
        undo.callback(children.reap)
        child = children.start(_LIST_DIRECTORY, comm, str(filesystem.mountpoint / directory))
        code = exit_of(child)
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
        run_tool("iptables", "-w", "-I", *rule)
        undo.callback(run_tool, "iptables", "-w", "-D", *rule)
        sender.sendto(payload, ("127.0.0.1", dport))
        receiver.settimeout(CHILD_EXIT_TIMEOUT_S)
        assert receiver.recv(len(payload) + 1) == payload
        yield NetfilterLog(prefix, chain, sport, dport, len(payload), rule)
