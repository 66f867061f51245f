"""The forwarder's side of capture: open the source, run the capture process, read frames.

The source is opened here, so that a missing device or a permission problem is a clear
:class:`DeviceError` before anything runs; the open file is then handed to the capture
process (``capture_process``), which does nothing but read, at real-time priority when the
forwarder may grant it (CAP_SYS_NICE). Its frames arrive over a pipe that the event loop
watches (a pipe, never /dev/kmsg itself: uvloop's ``add_reader`` stops for good on the
device's first overrun, FACTS.md). The pipe is watched with ``add_reader`` and read here,
not through ``connect_read_pipe``: uvloop's pipe transport closes the fd itself and then
closes the file object it was given, a second ``close()`` of the same number that can hit
a file another thread (a checkpoint being written) has just opened under it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from forwarder.config import SourceConfig
from forwarder.errors import DeviceError, ForwarderError
from forwarder.source import capture_process
from forwarder.source.capture_process import CONTROL, SEPARATOR, FrameKind

log = structlog.get_logger("forwarder.source.capture")
HIGH_WATER_BYTES: Final = 8 << 20
PIPE_READ_BYTES: Final = 256 << 10
CAPTURE_RT_PRIORITY: Final = 1
PARSE_WINDOW_BYTES: Final = 64 << 10  # a few hundred frames; one record is <= 16 KiB
_KINDS: Final = {kind.value: kind for kind in FrameKind}  # a dict look-up, not an enum call


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 0.8 µs per record to build
class Frame:
    """One message from the capture process (never changed once built)."""

    kind: FrameKind
    payload: bytes


@dataclass(frozen=True, slots=True)
class Window:
    """What one read of the pipe gave: raw records, and control frames (overrun, end...)."""

    records: list[bytes]
    controls: list[Frame]


def open_source(path: Path, *, seek_newest: bool) -> tuple[int, bool]:
    """Open the kmsg device or dump; return (fd, is_device) or raise DeviceError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError as error:
        raise DeviceError(f"cannot open {path}: no such device or file") from error
    except PermissionError as error:
        hint = "reading the kernel log needs root or CAP_SYSLOG"
        if error.errno == errno.EPERM:
            hint += " (and kernel.printk_devkmsg must not be 'off')"
        raise DeviceError(f"cannot open {path}: {error.strerror}; {hint}") from error
    except OSError as error:
        raise DeviceError(f"cannot open {path}: {error.strerror}") from error
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise DeviceError(f"cannot read {path}: it is a directory, not /dev/kmsg or a dump")
    is_device = stat.S_ISCHR(mode)
    if not is_device:
        os.set_blocking(fd, True)  # dumps and FIFOs are read with plain blocking reads
    if seek_newest and is_device:
        os.lseek(fd, 0, os.SEEK_END)
    return fd, is_device


def capture_command(source: SourceConfig, fd: int, *, is_device: bool) -> list[str]:
    """The command line of the capture process reading ``fd``.

    ``-I``: no PYTHON* variables, user site or script directory; ``-S``: no ``site`` (it
    costs 2.5 MiB in a venv with editable installs). The module is imported by name from its
    own directory, not run by path and not with ``-m``: a script run by path is compiled
    afresh every time (1.2 MiB more of this small process's memory than its cached bytecode),
    and ``-m`` would run the package's ``__init__``; the capture process needs only the
    standard library. Its directory goes last on ``sys.path``, after the standard library.
    """
    directory = str(Path(capture_process.__file__).parent)
    launch = (
        f"import sys; sys.path.append({directory!r}); import capture_process; "
        "sys.exit(capture_process.main())"
    )
    command = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        launch,
        f"--fd={fd}",
        f"--kind={'device' if is_device else 'dump'}",
        f"--buffer-bytes={source.buffer_bytes}",
        f"--spin-us={source.spin_us}",
    ]
    if source.buffer_records is not None:
        command.append(f"--buffer-records={source.buffer_records}")
    if source.follow:
        command.append("--follow")
    return command


class Capture:
    """Runs the capture process for one source and yields its frames."""

    def __init__(self, source: SourceConfig, *, seek_newest: bool) -> None:
        self._source = source
        self._seek_newest = seek_newest
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()
        self._offset = 0
        self._data_ready = asyncio.Event()
        self._eof = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False
        self._paused = False

    @property
    def pid(self) -> int | None:
        """Pid of the capture process, once started."""
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        """True while the capture process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received from the capture process and not consumed yet."""
        return len(self._buffer) - self._offset

    def open(self) -> None:
        """Open the source and start the capture process (raises DeviceError)."""
        fd, is_device = open_source(self._source.path, seek_newest=self._seek_newest)
        command = capture_command(self._source, fd, is_device=is_device)
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, pass_fds=(fd,)
            )
        finally:
            os.close(fd)
        if is_device and self._source.capture_priority == "realtime":
            _raise_priority(self._process.pid)

    async def attach(self) -> None:
        """Start watching the pipe from the capture process (call once, in the loop)."""
        assert self._process is not None
        assert self._process.stdout is not None
        self._loop = asyncio.get_running_loop()
        os.set_blocking(self._process.stdout.fileno(), False)
        self._watch(on=True)

    async def read_frames(self) -> Sequence[Frame]:
        """Return the next frames (at least one), or an empty list at the end of input."""
        while True:
            frames = self._parse()
            if frames:
                return frames
            if self._eof:
                return []
            self._data_ready.clear()
            await self._data_ready.wait()

    def request_stop(self) -> None:
        """Ask the capture process to stop reading; it hands over what it holds, then exits.

        The pipe then ends: ``read_frames`` returns an empty list after the last frame.
        """
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def stop(self) -> None:
        """End the capture process now (by its pid) and close the pipe."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            self._process.wait()
        self._watch(on=False)
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()  # the pipe's one owner closes it, once

    @property
    def exit_code(self) -> int | None:
        """The capture process's exit code once it has ended."""
        return self._process.poll() if self._process is not None else None

    async def read_window(self) -> Window:
        """The next window of records and control frames; an empty one at the end of input.

        The fast path of :meth:`read_frames`: a window without control frames is split in
        one call, with no object per record.
        """
        while True:
            data = self._take_window()
            if data is not None:
                if CONTROL not in data:  # records only: a record never holds a raw 0x01
                    return Window(data.split(SEPARATOR), [])
                records: list[bytes] = []
                controls: list[Frame] = []
                for part in data.split(SEPARATOR):
                    frame = _frame(part)
                    if frame.kind is FrameKind.RECORD:
                        records.append(part)
                    else:
                        controls.append(frame)
                return Window(records, controls)
            if self._eof:
                return Window([], [])
            self._data_ready.clear()
            await self._data_ready.wait()

    def _parse(self) -> list[Frame]:
        data = self._take_window()
        return [] if data is None else [_frame(part) for part in data.split(SEPARATOR)]

    def _take_window(self) -> bytes | None:
        """The bytes of the next whole frames (separators between them), or None."""
        buffer, offset = self._buffer, self._offset
        # A bounded window keeps each group of frames (and each sink's queue chunk) small.
        last = buffer.rfind(SEPARATOR, offset, offset + PARSE_WINDOW_BYTES)
        if last < 0:  # no frame ends in the window: one frame is larger than it
            last = buffer.find(SEPARATOR, offset + PARSE_WINDOW_BYTES)
            if last < 0:
                return None
        with memoryview(buffer) as view:  # one copy of the window, not two
            data = bytes(view[offset:last])
        offset = last + 1
        end = len(buffer)
        if offset > (1 << 20) or offset == end:
            del buffer[:offset]
            offset = 0
        self._offset = offset
        if self._paused and self.buffered_bytes < HIGH_WATER_BYTES // 2:
            self._paused = False
            self._watch(on=not self._eof)
        return data

    def _received(self, data: bytes) -> None:
        self._buffer += data
        self._data_ready.set()
        if not self._paused and self.buffered_bytes > HIGH_WATER_BYTES:
            self._paused = True
            self._watch(on=False)

    def _ended(self) -> None:
        self._eof = True
        self._data_ready.set()

    def _watch(self, *, on: bool) -> None:
        """Watch the pipe for data (or stop), once the loop is known."""
        if self._loop is None or self._process is None or self._process.stdout is None:
            return
        if on and not self._watching:
            self._loop.add_reader(self._process.stdout.fileno(), self._readable)
        elif not on and self._watching:
            self._loop.remove_reader(self._process.stdout.fileno())
        self._watching = on

    def _readable(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        try:
            data = os.read(self._process.stdout.fileno(), PIPE_READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # the pipe broke: as good as its end
        if data:
            self._received(data)
        else:
            self._watch(on=False)
            self._ended()


def _raise_priority(pid: int) -> None:
    """Let the capture process run before anything else that wants a CPU.

    A flood leaves the ring a few ms; waiting that long for a CPU behind the forwarder's
    own parsing, the writer or any busy neighbour loses records (bench/capture_bench.py).
    SCHED_RR at the lowest real-time priority preempts every normal task; the process
    reads only while records flow (napping 100 µs between reads when a flood pauses) and
    sleeps otherwise, so it stays well inside the kernel's real-time throttling (95% of
    each second). Needs CAP_SYS_NICE.
    """
    try:
        os.sched_setscheduler(pid, os.SCHED_RR, os.sched_param(CAPTURE_RT_PRIORITY))
    except OSError as error:
        log.info(
            "capture_priority_normal",
            reason=error.strerror,
            hint="without CAP_SYS_NICE, a busy machine can delay capture long enough "
            "in a flood to lose records",
        )
        return
    log.debug("capture_priority_realtime", policy="SCHED_RR", priority=CAPTURE_RT_PRIORITY)


def _frame(raw: bytes) -> Frame:
    if not raw.startswith(CONTROL):
        return Frame(FrameKind.RECORD, raw)
    kind = _KINDS.get(raw[1]) if len(raw) > 1 else None
    if kind is None:
        raise ForwarderError(f"the capture stream is corrupt (control frame {raw[:8]!r})")
    return Frame(kind, raw[2:])
