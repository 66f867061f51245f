"""The capture process's buffer: frames read or copied in place, bounded in bytes, written whole.

The device side is driven through ``_Output.read_chunk`` with a reader that behaves like
/dev/kmsg (one record per read, ``None`` when dry, errors as the kernel gives them), and a
SOCK_SEQPACKET socket, which also hands over one message per ``read()``; the pipe side is a
real pipe.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.source.capture_process import (
    _STOP,
    CHUNK_BYTES,
    CONTROL,
    MAX_RECORD_BYTES,
    RELEASE_MIN_BYTES,
    SEGMENT_BYTES,
    SEPARATOR,
    DumpFramer,
    FrameKind,
    RejectReason,
    _failure_frame,
    _Output,
    _stop_reading,
    _StopReadingError,
)

SMALL_PIPE = 4096


class FakeDevice:
    """Reads like /dev/kmsg: one record per read, None when dry, then an error if given."""

    def __init__(self, records: list[bytes], error: OSError | None = None) -> None:
        self.records = list(reversed(records))
        self.error = error

    def readinto(self, view: memoryview) -> int | None:
        """Copy the next record into ``view``; EINVAL if it does not fit, as the kernel does."""
        if not self.records:
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            return None
        record = self.records.pop()
        if len(record) > len(view):
            raise OSError(errno.EINVAL, "record larger than the buffer")
        view[: len(record)] = record
        return len(record)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe (read end, non-blocking write end), both closed afterwards."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def drain(output: _Output, read_fd: int) -> list[bytes]:
    """Write everything the output holds, reading the pipe meanwhile; the frames, in order."""
    os.set_blocking(read_fd, False)
    stream = bytearray()
    for _ in range(1_000_000):  # bounded: each turn moves at least one pipe-full
        output.flush()
        try:
            while chunk := os.read(read_fd, 1 << 20):
                stream += chunk
        except BlockingIOError:
            pass
        if output.empty:
            break
    else:
        pytest.fail("the output never drained")
    if not stream:
        return []
    assert stream.endswith(SEPARATOR)
    return bytes(stream[:-1]).split(SEPARATOR)


def record(seq: int, size: int = 60) -> bytes:
    """A device record whose text pads it to about ``size`` bytes."""
    head = f"6,{seq},{seq * 10},-;".encode()
    return head + b"r" * max(0, size - len(head) - 1) + b"\n"


def test_device_records_arrive_whole_and_in_order(pipe):
    """Records read in place, across chunks and segments, come out of the pipe byte for byte."""
    read_fd, write_fd = pipe
    sizes = [60, 2048, 8192, 1, 300]
    records = [record(seq, sizes[seq % len(sizes)]) for seq in range(1, 3000)]
    assert sum(map(len, records)) > 2 * SEGMENT_BYTES
    device = FakeDevice(records)
    output = _Output(write_fd, max_bytes=1 << 30)
    frames: list[bytes] = []
    total = 0
    for _ in range(len(records) + 1):  # a chunk reads one record at least
        read, failure = output.read_chunk(device.readinto)
        total += read
        frames += drain(output, read_fd)
        if failure is not None:
            break
    assert isinstance(failure, BlockingIOError)  # the ring ran dry
    assert total == len(records)
    assert frames == records


def test_read_errors_end_the_chunk_and_become_frames(pipe):
    """EPIPE (records overwritten) and EINVAL (record too large) stop the chunk after what was read."""
    _read_fd, write_fd = pipe
    output = _Output(write_fd, max_bytes=1 << 30)
    device = FakeDevice([record(1), record(2)], BrokenPipeError(errno.EPIPE, "overwritten"))
    read, failure = output.read_chunk(device.readinto)
    assert read == 2
    assert isinstance(failure, BrokenPipeError)
    assert _failure_frame(failure) is FrameKind.OVERRUN
    assert _failure_frame(OSError(errno.EINVAL, "too large")) is FrameKind.TOO_LARGE


def test_overrun_frame_follows_the_records_read_before_it(pipe):
    """After an overrun the OVERRUN control frame comes right after the records read before it."""
    read_fd, write_fd = pipe
    output = _Output(write_fd, max_bytes=1 << 30)
    device = FakeDevice([record(1), record(2)], BrokenPipeError(errno.EPIPE, "overwritten"))
    _read, failure = output.read_chunk(device.readinto)
    assert failure is not None
    output.add(_failure_frame(failure))
    output.read_chunk(FakeDevice([record(9)]).readinto)
    frames = drain(output, read_fd)
    assert frames == [record(1), record(2), CONTROL + bytes((FrameKind.OVERRUN,)), record(9)]


def test_buffer_is_full_at_its_byte_bound_and_not_before():
    """With the pipe full, the buffer reports full once it holds max_bytes of frames, not earlier."""
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(write_fd, False)
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, SMALL_PIPE)
        max_bytes = 3 * SEGMENT_BYTES // 2
        output = _Output(write_fd, max_bytes=max_bytes)
        frame = record(1, 1000)
        added = 0
        while not output.full:
            output.extend([frame])
            added += 1
            assert added * (len(frame) + 1) < max_bytes + CHUNK_BYTES + SMALL_PIPE
        # What the pipe took does not count; the rest reaches the bound.
        assert added * (len(frame) + 1) >= max_bytes
        frames = drain(output, read_fd)
        assert frames == [frame] * added
        assert not output.full
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_buffer_records_bounds_frames_too(pipe):
    """With buffer_records given, the buffer is full at that many frames whatever their size."""
    read_fd, write_fd = pipe
    fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, SMALL_PIPE)
    output = _Output(write_fd, max_bytes=1 << 30, max_records=500)
    added = 0
    while not output.full and added < 10_000:
        output.extend([b"6,1,2,-;x\n"])
        added += 1
    assert 500 <= added < 500 + SMALL_PIPE  # frames in the pipe are no longer held
    assert len(drain(output, read_fd)) == added


_frame_bytes = st.binary(min_size=0, max_size=3000).map(lambda b: b.replace(SEPARATOR, b"\\"))


@settings(max_examples=100)
@given(st.lists(_frame_bytes, max_size=400), st.integers(min_value=1, max_value=40))
def test_copied_frames_survive_any_byte(frames, per_extend):
    """Frames of any bytes but NUL, copied in groups of any size, arrive exactly as given."""
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(write_fd, False)
        output = _Output(write_fd, max_bytes=1 << 30)
        for start in range(0, len(frames), per_extend):
            output.extend(frames[start : start + per_extend])
        assert drain(output, read_fd) == frames
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_large_and_rejected_dump_frames_keep_their_place(pipe):
    """A record of 0x01 bytes (escaped to 4x its size), a too-long and a NUL record frame in order."""
    read_fd, write_fd = pipe
    controls = b"6,1,2,-;" + b"\x01" * (MAX_RECORD_BYTES - 9) + b"\n"
    dump = controls + b"6,2,3,-;" + b"z" * 3 * MAX_RECORD_BYTES + b"\n6,3,4,-;a\x00b\n6,4,5,-;ok\n"
    framer = DumpFramer()
    output = _Output(write_fd, max_bytes=1 << 30)
    output.extend(framer.feed(dump) + framer.finish())
    rejected = CONTROL + bytes((FrameKind.REJECTED,))
    assert drain(output, read_fd) == [
        controls.replace(b"\x01", b"\\x01"),
        rejected + RejectReason.TOO_LONG,
        rejected + RejectReason.NUL,
        b"6,4,5,-;ok\n",
    ]


def test_a_segment_freed_by_the_pipe_is_reused_zeroed(pipe):
    """Records read into a reused segment are still NUL-separated (the old bytes are gone)."""
    read_fd, write_fd = pipe
    output = _Output(write_fd, max_bytes=1 << 30)
    long_records = [record(seq, 8000) for seq in range(1, 400)]  # ~3 MiB: segments come back
    output.read_chunk(FakeDevice([]).readinto)
    frames: list[bytes] = []
    device = FakeDevice(long_records + [record(seq, 20) for seq in range(400, 900)])
    for _ in range(2000):
        _read, failure = output.read_chunk(device.readinto)
        frames += drain(output, read_fd)
        if failure is not None:
            break
    assert frames == long_records + [record(seq, 20) for seq in range(400, 900)]


def _anonymous_kib() -> int:
    """Resident anonymous memory of the test process (RssAnon), KiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("RssAnon:")).split()[1])


def test_idle_after_a_burst_gives_the_memory_back_and_reads_on_cleanly(pipe):
    """Going idle after a burst releases the tail's pages; later records stay NUL-separated."""
    read_fd, write_fd = pipe
    output = _Output(write_fd, max_bytes=1 << 30)
    burst = [record(seq, 1000) for seq in range(1, 600)]  # ~600 KiB of the first segment
    device = FakeDevice(burst)
    frames: list[bytes] = []
    for _ in range(len(burst) + 1):
        _read, failure = output.read_chunk(device.readinto)
        frames += drain(output, read_fd)
        if failure is not None:
            break
    assert output.empty
    before = _anonymous_kib()
    output.release_idle()
    assert before - _anonymous_kib() >= 500  # KiB: the burst's ~600 KiB of pages went back
    after = [record(seq, 30) for seq in range(600, 650)]  # shorter: old bytes would show
    device = FakeDevice(after)
    output.read_chunk(device.readinto)
    frames += drain(output, read_fd)
    assert frames == burst + after


def test_a_trickle_is_not_released_record_by_record(pipe):
    """Below RELEASE_MIN_BYTES going idle keeps the tail: no madvise per record."""
    read_fd, write_fd = pipe
    output = _Output(write_fd, max_bytes=1 << 30)
    output.read_chunk(FakeDevice([record(1, 200)]).readinto)
    drain(output, read_fd)
    filled = output.tail.filled
    output.release_idle()
    assert output.tail.filled == filled < RELEASE_MIN_BYTES


def test_capture_process_holds_a_backlog_beyond_the_pipe(tmp_path):
    """The capture process keeps reading while nobody reads its pipe, then hands every record over."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    records = [record(seq, 500) for seq in range(1, 8001)]  # ~4 MiB: 4x the pipe
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forwarder.source.capture_process",
            f"--fd={reader.fileno()}",
            "--kind=device",
            "--spin-us=0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        pass_fds=(reader.fileno(),),
    )
    reader.close()
    try:
        sent = threading.Thread(target=lambda: [writer.send(r) for r in records], daemon=True)
        sent.start()
        sent.join(timeout=20)  # returns only if the capture process took them all
        assert not sent.is_alive(), "the capture process stopped reading below its bound"
        assert process.stdout is not None
        stream = b""
        while stream.count(SEPARATOR) < len(records):
            chunk = process.stdout.read1(1 << 20)
            assert chunk, "the pipe ended early"
            stream += chunk
        assert stream.split(SEPARATOR)[:-1] == records
    finally:
        writer.close()
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_one_flush_writes_every_queued_chunk_the_pipe_can_take(pipe):
    """Many small chunks queued while the pipe was busy all go in one flush when it has room."""
    read_fd, write_fd = pipe
    output = _Output(write_fd, max_bytes=1 << 30)
    frames = [record(seq, 30) for seq in range(1, 201)]
    for frame in frames:
        output.extend([frame])
        output.seal()  # one chunk per frame: far more than one writev takes
    assert len(output.chunks) == len(frames)
    output.flush()
    assert output.empty
    assert drain(output, read_fd) == frames


class SignalledDevice(FakeDevice):
    """A FakeDevice that sends this process SIGTERM when two records are left to read."""

    def readinto(self, view: memoryview) -> int | None:
        """Signal once, then read as FakeDevice does."""
        if len(self.records) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().readinto(view)


def test_sigterm_during_a_read_burst_waits_until_its_records_are_counted(pipe):
    """A SIGTERM in the middle of a burst stops the capture only after every record it read is queued."""
    read_fd, write_fd = pipe
    output = _Output(write_fd, max_bytes=1 << 30)
    previous = signal.signal(signal.SIGTERM, _stop_reading)
    try:
        with pytest.raises(_StopReadingError):
            output.read_chunk(SignalledDevice([record(1), record(2), record(3)]).readinto)
    finally:
        signal.signal(signal.SIGTERM, previous)
        _STOP.requested = False
    assert drain(output, read_fd) == [record(1), record(2), record(3)]
