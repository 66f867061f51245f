"""What a real-kernel test changes on the machine, and how it gives each thing back.

Sysctls (saved, set, restored; flock()ed meanwhile against other suites running at the
same time), children (killed and reaped by pid), ext4 images on loop devices (unmounted
and detached by name), and the probes that prove a test left nothing behind.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.wait import wait_until

PROC_SYS = Path("/proc/sys")
CHILD_EXIT_TIMEOUT_S = 20


def run_tool(*args: str) -> str:
    """Run a tool; its stdout, or a failure that says what the tool said."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError as error:
        raise AssertionError(f"{args[0]} is missing: `make system-deps` installs it") from error
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def read_sysctl(name: str) -> str:
    """A sysctl's value as /proc/sys prints it (tabs between the numbers of a vector)."""
    return (PROC_SYS / name.replace(".", "/")).read_text().strip()


def read_settled_sysctl(name: str) -> str:
    """A sysctl's value while no suite holds it changed (its flock held for the read).

    What a test compares after undoing its own change: another worktree's suite running at the
    same time may have the value changed for its own block, and gives it back before unlocking.
    """
    with _exclusive(PROC_SYS / name.replace(".", "/")):
        return read_sysctl(name)


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


def exit_of(child: subprocess.Popen[bytes]) -> int:
    """The child's exit code (negative: the signal that ended it), waiting boundedly."""
    try:
        return child.wait(timeout=CHILD_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"child {child.pid} did not end within {error.timeout} s") from error


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
    run_tool("mkfs.ext4", "-q", "-F", *populate, str(image))


def attached_devices(image: Path) -> list[str]:
    """Loop devices backed by ``image`` (empty once it is detached)."""
    return [line.split(":", 1)[0] for line in run_tool("losetup", "-j", str(image)).splitlines()]


def mounted(mountpoint: Path) -> bool:
    """Whether anything is mounted at ``mountpoint``."""
    target = str(mountpoint)
    with Path("/proc/self/mountinfo").open() as mountinfo:
        return any(line.split()[4] == target for line in mountinfo)


@contextmanager
def loop_mount(image: Path, mountpoint: Path, options: str = "") -> Iterator[LoopFilesystem]:
    """Attach ``image`` to a free loop device and mount it; unmount and detach after."""
    with ExitStack() as undo:
        device = Path(run_tool("losetup", "--find", "--show", str(image)).strip())
        undo.callback(run_tool, "losetup", "-d", str(device))
        mountpoint.mkdir(exist_ok=True)
        run_tool(
            "mount",
            "-t",
            "ext4",
            *(("-o", options) if options else ()),
            str(device),
            str(mountpoint),
        )
        undo.callback(run_tool, "umount", str(mountpoint))
        yield LoopFilesystem(image, device, mountpoint)


@contextmanager
def tmpfs(mountpoint: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``mountpoint`` (made) for the block, lazily unmounted after."""
    mountpoint.mkdir()
    run_tool("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint))
    try:
        yield mountpoint
    finally:
        run_tool("umount", "-l", str(mountpoint))


def iptables_rules() -> str:
    """``iptables -S``: every rule of the filter table, as the commands that add them."""
    return run_tool("iptables", "-w", "-S")
