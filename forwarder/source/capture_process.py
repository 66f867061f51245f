"""The capture process: read raw records as fast as the kernel writes them, nothing else.

Runs as its own process (``python -m forwarder.source.capture_process``) so that nothing in the
forwarder (encoding, compression, a sink's retries, the GIL) can ever stall the read
loop: the kernel ring lasts ~2 ms in a flood (FACTS.md). It reads the inherited source
fd and writes framed raw records to stdout (a pipe to the forwarder), buffering up to
``--buffer-bytes`` of frames (and ``--buffer-records`` frames, if given) when the forwarder
is slow; only then does it stop reading.

In a flood, after the ring runs dry it keeps reading it every 100 µs (short hrtimer naps)
for ``--spin-us`` after the last record before sleeping in ``poll()``: a reader sleeping in
``poll()`` wakes up to ~4 ms late, longer than the ring lasts in a flood. Below flood rates
it sleeps in ``poll()`` at once (no CPU spent).
The forwarder runs this process at real-time priority when allowed (``capture.py``).

Frames are separated by a NUL byte, which no record contains (the kernel escapes every byte
below 0x20), so a record from the device costs nothing but its read: it is read in place into
zeroed memory, right after the previous one and its NUL, and written to the pipe from there
(``_Output``). A frame starting with 0x01
(records start with a digit) is a control frame: 0x01, its ``FrameKind``, then its payload.
A dump may hold anything: a record with a raw NUL or longer than any kernel record is rejected
(a ``REJECTED`` frame naming the reason, never the bytes), and a raw 0x01 is escaped the way the
kernel escapes it, so the framing survives any input.
"""

from __future__ import annotations

import errno
import fcntl
import io
import mmap
import os
import select
import signal
import stat
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from enum import IntEnum
from itertools import islice

# This process starts lean (``capture.py`` runs this file with ``python -I``, not ``-m``) and
# imports only what it uses: typing (for Final) and argparse cost more memory than the rest
# of the process (bench/idle_bench.py). Annotations are never evaluated at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


SEPARATOR: Final = b"\x00"
CONTROL: Final = b"\x01"
_NEWLINE_SEPARATED: Final = b"\n" + SEPARATOR
_SEPARATED_CONTINUATION: Final = b"\n" + SEPARATOR + b" "
READ_SIZE: Final = 16_384  # > 8 KiB: a record larger than the buffer is lost (EINVAL)
FILE_CHUNK: Final = 1 << 16
# The kernel formats a whole record (header, text, dictionary lines) into one buffer of
# 8192 bytes (CONSOLE_EXT_LOG_MAX, before 6.2; PRINTK_MESSAGE_MAX = 2048 since): a longer
# record in a dump was not written by any kernel.
MAX_RECORD_BYTES: Final = 8192
PIPE_SIZE: Final = 1 << 20
# Frames read between two writes to the pipe (~350 short records): one write per chunk.
CHUNK_BYTES: Final = 32 << 10
SEGMENT_BYTES: Final = 1 << 20  # the buffer grows and shrinks by this much
RELEASE_MIN_BYTES: Final = 64 << 10  # idle with this much of the tail used: give it back
WRITEV_CHUNKS: Final = 64  # a pipe write takes up to 2 MiB when the forwarder catches up
# Bounded in bytes, not records: 128 MiB hold ~1.4M short records (~20 s of the
# forwarder falling 70k/s behind a flood) and cost nothing until a backlog builds.
DEFAULT_BUFFER_BYTES: Final = 128 << 20
FILE_BUFFER_RECORDS: Final = 2048  # a dump file read ahead of the forwarder
FLUSH_INTERVAL_S: Final = 0.005  # while spinning, a few records still reach the forwarder soon
# Fewer records read since the last wake-up means a rate (< ~60k/s with a 4 ms late
# wake-up) that the ring outlasts many times over: sleep at once, spin only in a flood.
SPIN_MIN_RECORDS: Final = 256
FLOOD_WATCH_S: Final = 1.0
FLOOD_POLL_MS: Final = 1
FOLLOW_POLL_S: Final = 0.2
_PR_SET_PDEATHSIG: Final = 1
_TERM: Final = frozenset({signal.SIGTERM})
DRY_NAP_S: Final = 0.0001  # ~50 records at 500k/s: nothing next to the ring's ~1,800
_ZEROS: Final = memoryview(mmap.mmap(-1, SEGMENT_BYTES, prot=mmap.PROT_READ))  # never resident


class FrameKind(IntEnum):
    """What a frame carries."""

    RECORD = 1  # one raw record, as read
    OVERRUN = 2  # read() gave EPIPE: unread records were overwritten
    TOO_LARGE = 3  # read() gave EINVAL: a record larger than our buffer was consumed
    END = 4  # the dump file or FIFO ended
    ERROR = 5  # reading failed for good; payload is the message
    REJECTED = 6  # a dump record no kernel writes was dropped; payload is the reason


class RejectReason:
    """Why a dump record was rejected (the payload of a ``REJECTED`` frame)."""

    NUL = b"nul_byte"
    TOO_LONG = b"too_long"


class _StopState:
    """Whether SIGTERM may interrupt now, or must wait for the read burst to be counted."""

    deferred = False
    requested = False


_STOP: Final = _StopState()
_DRY: Final = BlockingIOError(errno.EAGAIN, "the ring is dry")


class _Segment:
    """A MiB of anonymous memory that frames are read or copied into, NUL-separated in place.

    Frames end at ``filled``; everything after it is still zero, so a record read at
    ``filled`` is already followed by its separator. Memory from ``mmap`` goes back to the
    kernel as soon as the segment is dropped, whatever the allocator would keep.
    """

    __slots__ = ("filled", "memory", "unsent", "view")

    def __init__(self) -> None:
        # Private: released pages read as zeros (a shared mapping would show the old bytes).
        self.memory = mmap.mmap(-1, SEGMENT_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self.memory)
        self.filled = 0
        self.unsent = 0  # chunks cut from this segment and not written yet

    def clear(self) -> None:
        """Zero what was used, for reuse."""
        self.view[: self.filled] = _ZEROS[: self.filled]
        self.filled = 0

    def release(self) -> None:
        """Hand the used pages back to the kernel (they read as zeros again), for reuse."""
        if self.filled:
            self.memory.madvise(mmap.MADV_DONTNEED, 0, self.filled)
        self.filled = 0


class _Output:
    """Frames waiting for the pipe, written without blocking while reading goes on.

    Frames are read (device) or copied (dump) into the tail segment; every ``CHUNK_BYTES`` the
    open chunk is cut off and queued as a view of the segment, and queued chunks go to the pipe
    with ``writev``: from the kernel's read to the pipe a record is never copied in between.
    The queue is bounded by ``max_bytes`` of frames and, if given, ``max_records`` frames.
    """

    def __init__(self, fd: int, max_bytes: int, max_records: int | None = None) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.max_records = max_records if max_records is not None else sys.maxsize
        self.chunks: deque[tuple[memoryview, int, _Segment | None]] = deque()
        self.queued_records = 0
        self.queued_bytes = 0
        self.tail = _Segment()
        self.start = 0  # where the open chunk begins in the tail segment
        self.records = 0  # frames in the open chunk
        self._spare: _Segment | None = None

    def add(self, kind: FrameKind, payload: bytes = b"") -> None:
        """Queue a control frame."""
        self.extend((CONTROL + bytes((kind,)) + payload,))

    def extend(self, frames: Iterable[bytes]) -> None:
        """Queue frames (records or control frames), copying each into the tail segment."""
        for frame in frames:
            size = len(frame)
            if self.tail.filled + size >= SEGMENT_BYTES:  # frames are < 40 KiB (FrameKind)
                self._next_segment()
            tail = self.tail
            tail.view[tail.filled : tail.filled + size] = frame
            tail.filled += size + 1
            self.records += 1
        if self.tail.filled - self.start >= CHUNK_BYTES:
            self.flush()

    def read_chunk(
        self, readinto: Callable[[memoryview], int | None]
    ) -> tuple[int, OSError | None]:
        """Read records into the tail segment until a chunk is full; stop at the first error.

        ``readinto`` is the device's ``FileIO.readinto`` (``None``: the ring is dry). The hot
        loop: per record nothing but the read into place (the separator is already there).
        """
        if self.start > SEGMENT_BYTES - CHUNK_BYTES - READ_SIZE:
            self._next_segment()
        tail = self.tail
        view, position = tail.view, tail.filled
        limit = self.start + CHUNK_BYTES  # every read has READ_SIZE of room or more
        records = 0
        failure: OSError | None = None
        _STOP.deferred = True  # a SIGTERM now would drop a record read but not counted
        try:
            while position < limit:
                size = readinto(view[position:])
                if size is None:
                    failure = _DRY
                    break
                position += size + 1
                records += 1
        except OSError as error:
            failure = error
        finally:
            tail.filled = position
            self.records += records
            _STOP.deferred = False
        if _STOP.requested:
            raise _StopReadingError
        if position - self.start >= CHUNK_BYTES:
            self.flush()
        return records, failure

    def add_block(self, block: bytes, records: int) -> None:
        """Queue ``records`` frames already joined, each followed by the separator (dumps)."""
        if records:
            self.seal()
            self.chunks.append((memoryview(block), records, None))
            self.queued_records += records
            self.queued_bytes += len(block)
            self.flush()

    def seal(self) -> None:
        """Queue the open chunk."""
        if self.records:
            tail = self.tail
            self.chunks.append((tail.view[self.start : tail.filled], self.records, tail))
            tail.unsent += 1
            self.queued_records += self.records
            self.queued_bytes += tail.filled - self.start
            self.start = tail.filled
            self.records = 0

    @property
    def full(self) -> bool:
        """At the bound: reading waits for the pipe (and the ring may overrun meanwhile)."""
        return (
            self.queued_bytes + self.tail.filled - self.start >= self.max_bytes
            or self.queued_records + self.records >= self.max_records
        )

    @property
    def empty(self) -> bool:
        """Nothing waits for the pipe."""
        return not self.chunks and not self.records

    def flush(self) -> None:
        """Write what the pipe takes now; raise BrokenPipeError if the forwarder is gone."""
        self.seal()
        chunks = self.chunks
        while chunks:
            # SIGTERM (a _StopReadingError) must not land between a write and its
            # bookkeeping: the rest of a half-written chunk would be written again whole,
            # and the forwarder would read a torn frame.
            signal.pthread_sigmask(signal.SIG_BLOCK, _TERM)
            try:
                batch = [chunk[0] for chunk in islice(chunks, WRITEV_CHUNKS)]
                try:
                    written = os.writev(self.fd, batch)
                except BlockingIOError:
                    return
                self._written(written)
                if written < sum(map(len, batch)):
                    return  # the pipe is full
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERM)

    def _written(self, written: int) -> None:
        """Drop what the pipe took: whole chunks, and the start of a chunk written in part."""
        chunks = self.chunks
        while written:
            data, records, segment = chunks[0]
            if written < len(data):
                chunks[0] = (data[written:], records, segment)
                self.queued_bytes -= written
                return
            written -= len(data)
            chunks.popleft()
            self.queued_records -= records
            self.queued_bytes -= len(data)
            if segment is None:  # a dump's block, not in a segment
                continue
            segment.unsent -= 1
            if not segment.unsent and segment is not self.tail:
                self._retire(segment)

    def _next_segment(self) -> None:
        self.seal()
        old = self.tail
        self.tail = self._spare or _Segment()
        self._spare = None
        self.start = 0
        if not old.unsent:
            self._retire(old)

    def _retire(self, segment: _Segment) -> None:
        # One spare spares the page faults of a fresh segment in a long flood; more
        # would keep a past backlog's memory for good.
        if self._spare is None:
            segment.clear()
            self._spare = segment

    def release_idle(self) -> None:
        """Before sleeping with nothing queued: give a past burst's memory back to the kernel.

        Only after ``RELEASE_MIN_BYTES`` went through the tail (or with a spare segment), so
        a trickle of records costs one ``madvise`` per that many bytes, not one per record.
        """
        if not self.empty or (self.tail.filled < RELEASE_MIN_BYTES and self._spare is None):
            return
        self.tail.release()
        self.start = 0
        self._spare = None

    def wait_writable(self) -> None:
        """Sleep until the pipe has room."""
        select.select([], [self.fd], [])

    def wait_for_room(self) -> None:
        """Write to the pipe until the buffer is below its limit, waiting if need be."""
        self.flush()
        while self.full:
            self.wait_writable()
            self.flush()

    def drain(self) -> None:
        """Write everything still queued, waiting for the pipe as long as it takes."""
        self.flush()
        while not self.empty:
            self.wait_writable()
            self.flush()


def read_device(source_fd: int, output: _Output, spin_s: float) -> None:
    """Read /dev/kmsg (one record per read) until the forwarder goes away.

    In a flood (at least ``SPIN_MIN_RECORDS`` read since the last wake-up), a dry ring is
    read again every ``DRY_NAP_S`` for ``spin_s`` after the last record before sleeping in
    ``poll()``; for ``FLOOD_WATCH_S`` after a flood that sleep lasts at most ``FLOOD_POLL_MS``.
    """
    poller = select.poll()
    poller.register(source_fd, select.POLLIN)
    # FileIO.readinto answers a dry ring with None, not an exception, and reads into place.
    readinto = io.FileIO(source_fd, "rb", closefd=False).readinto
    got_record = False  # since the ring last ran dry
    read_since_wake = 0
    dry_since = flushed_at = time.monotonic()
    flood_at = -FLOOD_WATCH_S
    while True:
        if output.full:
            output.wait_for_room()
        read, failure = output.read_chunk(readinto)
        if read:
            got_record = True
            read_since_wake += read
        if failure is not _DRY:
            if failure is not None:
                output.add(_failure_frame(failure))
            continue
        now = time.monotonic()
        if got_record:  # just ran dry: the spin counts from here, not from the wake-up
            got_record = False
            dry_since = now
            if read_since_wake >= SPIN_MIN_RECORDS:
                flood_at = now
            if now - flushed_at >= FLUSH_INTERVAL_S:
                output.flush()
                flushed_at = now
        elif read_since_wake < SPIN_MIN_RECORDS or now - dry_since >= spin_s:
            output.flush()
            output.release_idle()
            # Soon after a flood, wake up on a timer too: poll() alone wakes us at the
            # next scheduler tick, later than a writer that paused and resumed needs.
            watching = now - flood_at < FLOOD_WATCH_S
            _sleep_until_readable(poller, output, FLOOD_POLL_MS if watching else None)
            read_since_wake = 0
            flushed_at = time.monotonic()
        else:
            # A short timed nap, not a busy spin: an hrtimer wakes us on time (printk's own
            # wake-up waits for the tick), and the CPU stays free, so a long flood at
            # real-time priority never runs into the kernel's RT throttling (95% per second),
            # which would stop us for 50 ms: far longer than the ring lasts.
            time.sleep(DRY_NAP_S)


def _failure_frame(failure: OSError) -> FrameKind:
    """EPIPE: records were overwritten; EINVAL: one was larger than our buffer (lost)."""
    if isinstance(failure, BrokenPipeError):
        return FrameKind.OVERRUN
    if failure.errno == errno.EINVAL:
        return FrameKind.TOO_LARGE
    raise failure


def _sleep_until_readable(poller: select.poll, output: _Output, timeout_ms: int | None) -> None:
    if output.empty:
        poller.poll(timeout_ms)
        return
    # Frames still queued: wake for the pipe too, so the forwarder is not starved.
    poller.register(output.fd, select.POLLOUT)
    try:
        poller.poll(timeout_ms)
    finally:
        poller.unregister(output.fd)


def read_dump(source_fd: int, output: _Output, follow: bool) -> None:
    """Read a kmsg dump (records as ``cat /dev/kmsg`` writes them) from a file or FIFO.

    A FIFO ends when its writer closes it (``follow`` applies to regular files only). A
    regular file waits on disk: only a few windows are held while the forwarder is behind
    (holding ``--buffer-records`` of it would only cost memory), a FIFO's writer may be live.
    """
    if stat.S_ISFIFO(os.fstat(source_fd).st_mode):
        follow = False
        _wait_for_writer(source_fd)
    else:
        output.max_records = min(output.max_records, FILE_BUFFER_RECORDS)
    framer = DumpFramer()
    while True:
        if output.full:
            output.wait_for_room()
        chunk = os.read(source_fd, FILE_CHUNK)
        if not chunk:
            if follow:
                output.flush()
                grew = _grows(source_fd)  # sleeps: an idle file must not be read in a busy loop
                if not grew:
                    output.extend(framer.finish())
                continue
            output.extend(framer.finish())
            output.add(FrameKind.END)
            return
        output.add_block(*framer.feed_block(chunk))


def _wait_for_writer(fifo_fd: int) -> None:
    # A FIFO opened (non-blocking) before any writer reads as EOF at once; poll() waits
    # for the first writer's data or its close (Linux reports no POLLHUP before a writer).
    poller = select.poll()
    poller.register(fifo_fd, select.POLLIN)
    poller.poll()


def _grows(source_fd: int) -> bool:
    time.sleep(FOLLOW_POLL_S)
    position = os.lseek(source_fd, 0, os.SEEK_CUR)
    return os.fstat(source_fd).st_size > position


class DumpFramer:
    """Cuts a dump into frames: one per record (a line and its `` KEY=value`` lines).

    Records with a raw NUL or over ``MAX_RECORD_BYTES`` become ``REJECTED`` frames; an
    overlong record is dropped as it streams by, so memory stays bounded whatever the input.
    """

    def __init__(self) -> None:
        self._pending = b""  # the start of the unfinished record
        self._discarding = False  # the unfinished record was rejected already

    def feed(self, chunk: bytes) -> list[bytes]:
        """Frames of every record that ``chunk`` completes."""
        data = self._pending + chunk
        frames: list[bytes] = []
        start = 0
        if self._discarding:
            start = _next_record_start(data, 0)
            if start < 0:
                self._pending = b"\n" if data.endswith(b"\n") else b""
                return frames
            self._discarding = False
        # Scanned once per chunk: most chunks need no check per record but its length.
        suspect = SEPARATOR in data or CONTROL in data
        append, find, end = frames.append, data.find, len(data)
        search = start
        while True:
            newline = find(b"\n", search)
            if newline < 0 or newline + 1 >= end:
                break
            if data[newline + 1] != 0x20:  # next line is not a " KEY=value" continuation
                record = data[start : newline + 1]
                append(_checked(record) if suspect or len(record) > MAX_RECORD_BYTES else record)
                start = newline + 1
            search = newline + 1
        tail = data[start:]
        if len(tail) > MAX_RECORD_BYTES:
            frames.append(_rejected(RejectReason.TOO_LONG))
            self._discarding = True
            tail = b"\n" if tail.endswith(b"\n") else b""
        self._pending = tail
        return frames

    def feed_block(self, chunk: bytes) -> tuple[bytes, int]:
        """:meth:`feed`, its frames joined (each followed by the separator), and their count.

        The usual chunk (no NUL or 0x01, no record over the limit) is cut with two replaces
        over the whole chunk, not record by record.
        """
        data = self._pending + chunk
        cut = data.rfind(b"\n", 0, len(data) - 1)  # a newline with a byte after it
        while cut >= 0 and data[cut + 1] == 0x20:  # that byte continues the record
            cut = data.rfind(b"\n", 0, cut)
        if not (self._discarding or SEPARATOR in data or CONTROL in data):
            complete, tail = data[: cut + 1], data[cut + 1 :]
            # A separator after every newline, then taken out again before continuation
            # lines (the chunk holds no separator of its own: a "\n\0 " is one we made).
            block = complete.replace(b"\n", _NEWLINE_SEPARATED).replace(
                _SEPARATED_CONTINUATION, b"\n "
            )
            if len(tail) <= MAX_RECORD_BYTES and not _has_long_record(block):
                self._pending = tail
                return block, len(block) - len(complete)
        frames = self.feed(chunk)
        return SEPARATOR.join(frames) + SEPARATOR if frames else b"", len(frames)

    def finish(self) -> list[bytes]:
        """The frame of the unfinished record (end of input, or a followed file paused)."""
        pending, self._pending = self._pending, b""
        if self._discarding:
            self._discarding = False
            return []
        return [_checked(pending)] if pending else []


def _has_long_record(block: bytes) -> bool:
    """Whether a record of ``block`` (separator after each) is over ``MAX_RECORD_BYTES``.

    Such a record covers a whole aligned stretch of half that size with no separator: only
    then are the records measured one by one.
    """
    step = MAX_RECORD_BYTES // 2
    if all(block.find(SEPARATOR, at, at + step) >= 0 for at in range(0, len(block), step)):
        return False
    return max(map(len, block.split(SEPARATOR))) > MAX_RECORD_BYTES


def _next_record_start(data: bytes, search: int) -> int:
    """Index of the first byte after a newline that starts no continuation line, or -1."""
    while True:
        newline = data.find(b"\n", search)
        if newline < 0 or newline + 1 >= len(data):
            return -1
        if data[newline + 1] != 0x20:
            return newline + 1
        search = newline + 1


def _checked(record: bytes) -> bytes:
    """The record's frame, a ``REJECTED`` frame, or the record with 0x01 escaped."""
    if len(record) > MAX_RECORD_BYTES:
        return _rejected(RejectReason.TOO_LONG)
    if SEPARATOR in record:
        return _rejected(RejectReason.NUL)
    if CONTROL in record:
        # Escaped the way the kernel escapes it: the parser restores the byte.
        return record.replace(CONTROL, b"\\x01")
    return record


def _rejected(reason: bytes) -> bytes:
    return CONTROL + bytes((FrameKind.REJECTED,)) + reason


class _StopReadingError(BaseException):
    """SIGTERM from the forwarder: stop reading, hand over what we hold, exit.

    Raised from the signal handler, so a blocking poll() or read() ends at once. Pipe writes
    (``_Output.flush``) and read bursts (``_Output.read_chunk``, until what they read is
    counted) are shielded from it; anywhere else, at worst a dump record is queued twice,
    and the forwarder skips a seq it has already seen.
    """


def _stop_reading(_signum: int, _frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends us for good
    if _STOP.deferred:
        _STOP.requested = True  # raised by the read burst once its records are counted
        return
    raise _StopReadingError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the capture process."""
    try:
        args = _Options(sys.argv[1:] if argv is None else argv)
    except (KeyError, ValueError) as error:
        print(f"kmsg-forwarder-capture: bad arguments: {error}", file=sys.stderr)  # noqa: T201
        return 2
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the forwarder decides when we stop
    signal.signal(signal.SIGTERM, _stop_reading)
    out_fd = sys.stdout.fileno()
    _grow_pipe(out_fd)
    os.set_blocking(out_fd, False)
    output = _Output(out_fd, args.buffer_bytes, args.buffer_records)
    try:
        if args.kind == "device":
            os.set_blocking(args.fd, False)
            read_device(args.fd, output, args.spin_us / 1e6)
        else:
            read_dump(args.fd, output, args.follow)
    except BrokenPipeError:
        return 0  # the forwarder closed the pipe: it is stopping
    except _StopReadingError:
        pass  # the forwarder is stopping: what we hold goes to it before we exit
    except OSError as error:
        output.add(FrameKind.ERROR, f"reading failed: {error.strerror}".encode())
    output.drain()
    return 0


def _die_with_parent() -> None:
    import ctypes  # noqa: PLC0415 - here only: the forwarder imports this module too

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux/glibc: the broken pipe still ends us
    if os.getppid() == 1:
        sys.exit(0)


def _grow_pipe(fd: int) -> None:
    # Not a pipe, or above pipe-max-size: the default size works, only slower.
    try:  # noqa: SIM105 - contextlib is one more import for this one call
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


class _Options:
    """The command line ``capture.py`` builds.

    ``--fd=N --kind=device|dump --buffer-bytes=N [--buffer-records=N] [--spin-us=N]
    [--follow]``, parsed by
    hand: argparse and its imports would cost this process more memory than its own code.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        values: dict[str, str] = {}
        for arg in argv:
            name, _, value = arg.partition("=")
            if name not in _OPTION_NAMES:
                raise ValueError(f"unknown option {arg!r}")
            values[name] = value
        self.fd = int(values["--fd"])
        self.kind = values["--kind"]
        if self.kind not in {"device", "dump"}:
            raise ValueError(f"--kind must be device or dump, not {self.kind!r}")
        self.buffer_bytes = int(values.get("--buffer-bytes", str(DEFAULT_BUFFER_BYTES)))
        records = values.get("--buffer-records")
        self.buffer_records = int(records) if records is not None else None
        self.spin_us = int(values.get("--spin-us", "2000"))
        self.follow = "--follow" in values


_OPTION_NAMES: Final = frozenset(
    {"--fd", "--kind", "--buffer-bytes", "--buffer-records", "--spin-us", "--follow"}
)


if __name__ == "__main__":
    sys.exit(main())
