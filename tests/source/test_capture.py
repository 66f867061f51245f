"""The capture process on dump files and FIFOs: records stay whole, the end is signalled."""

from __future__ import annotations

import asyncio
import os
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.config import SourceConfig
from forwarder.errors import DeviceError
from forwarder.source.capture import PARSE_WINDOW_BYTES, Capture, open_source
from forwarder.source.capture_process import MAX_RECORD_BYTES, DumpFramer, FrameKind, RejectReason
from forwarder.source.parser import Record, parse_record, render_record
from tests.support.dumps import reference_frames


def sample_records(count, first_seq=1):
    """Records with and without dictionary lines and escapes."""
    return [
        Record(
            facility_code=0,
            level_code=6,
            seq=seq,
            ts_usec=seq * 1000,
            flags="-",
            message=f"record {seq} \\ tab\there",
            subsystem="net" if seq % 2 else None,
            device="n2" if seq % 2 else None,
            fields=MappingProxyType({"OTHER": f"v{seq}"}) if seq % 3 == 0 else MappingProxyType({}),
        )
        for seq in range(first_seq, first_seq + count)
    ]


def dump_bytes(records):
    """Records as `cat /dev/kmsg > file` writes them."""
    return b"".join(render_record(record) for record in records)


async def read_until(capture, predicate, timeout_s=10):
    """Collect frames until predicate(frames) holds or the input ends (fail after timeout_s)."""
    frames = []
    async with asyncio.timeout(timeout_s):
        while not predicate(frames):
            batch = await capture.read_frames()
            if not batch:
                break
            frames.extend(batch)
    return frames


async def read_all(capture):
    """Every frame until the capture process's output ends."""
    return await read_until(capture, lambda _frames: False)


def record_frames(frames):
    """Parsed records of the RECORD frames."""
    return [parse_record(f.payload) for f in frames if f.kind is FrameKind.RECORD]


async def read_dump_file(path, content):
    """Write ``content`` to ``path`` and return every frame the capture makes of it."""
    path.write_bytes(content)
    capture = await started(SourceConfig(path=path))
    try:
        return await read_all(capture)
    finally:
        capture.stop()


async def started(source):
    """A Capture for this source, opened and attached."""
    capture = Capture(source, seek_newest=False)
    capture.open()
    await capture.attach()
    return capture


async def test_dump_file_gives_every_record_then_end(tmp_path):
    """A dump file yields each record (continuation lines kept with it) in order, then END."""
    records = sample_records(50)
    frames = await read_dump_file(tmp_path / "kmsg.dump", dump_bytes(records))
    assert record_frames(frames) == records
    assert [f.kind for f in frames].count(FrameKind.END) == 1
    assert frames[-1].kind is FrameKind.END


async def test_dump_payloads_are_whole_records(tmp_path):
    """Each RECORD frame is exactly one record's bytes, dictionary lines included."""
    records = sample_records(3)
    frames = await read_dump_file(tmp_path / "kmsg.dump", dump_bytes(records))
    payloads = [f.payload for f in frames if f.kind is FrameKind.RECORD]
    assert payloads == [render_record(record) for record in records]


async def test_last_record_without_newline_is_not_lost(tmp_path):
    """The dump's last record, lacking its trailing newline, still arrives whole."""
    records = sample_records(3)
    frames = await read_dump_file(tmp_path / "kmsg.dump", dump_bytes(records)[:-1])
    assert record_frames(frames) == records


async def test_large_dump_is_read_completely(tmp_path):
    """A dump larger than the read chunk and the pipe keeps every record across chunk edges."""
    records = sample_records(20_000)
    dump = tmp_path / "kmsg.dump"
    dump.write_bytes(dump_bytes(records))
    capture = await started(SourceConfig(path=dump, buffer_records=64))
    try:
        frames = await read_all(capture)
    finally:
        capture.stop()
    assert [r.seq for r in record_frames(frames)] == [r.seq for r in records]
    assert frames[-1].kind is FrameKind.END


async def test_empty_dump_gives_only_end(tmp_path):
    """An empty dump ends at once with a single END frame."""
    frames = await read_dump_file(tmp_path / "empty.dump", b"")
    assert [f.kind for f in frames] == [FrameKind.END]


async def test_fifo_is_read_until_the_writer_closes(tmp_path):
    """A FIFO opened before its writer waits for it, keeps records split across writes whole, and ends when it closes."""
    fifo = tmp_path / "kmsg.fifo"
    os.mkfifo(fifo)
    records = sample_records(6)
    data = dump_bytes(records)
    capture = await started(SourceConfig(path=fifo))
    try:
        await asyncio.sleep(0.5)  # the capture process is up before any writer appears
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO if the reader gave up
        os.set_blocking(writer, True)
        try:
            cut = data.index(b"\n SUBSYSTEM=") + 1  # split between a record and its dictionary
            os.write(writer, data[:cut])
            await asyncio.sleep(0.3)
            os.write(writer, data[cut:])
        finally:
            os.close(writer)
        frames = await read_all(capture)
    finally:
        capture.stop()
    assert record_frames(frames) == records
    assert frames[-1].kind is FrameKind.END


async def test_follow_mode_picks_up_appended_records(tmp_path):
    """With follow, records appended to the dump later are read too, and no END comes."""
    records = sample_records(6)
    dump = tmp_path / "growing.dump"
    dump.write_bytes(dump_bytes(records[:3]))
    capture = await started(SourceConfig(path=dump, follow=True))
    try:
        first = await read_until(capture, lambda frames: len(frames) >= 3)
        with dump.open("ab") as appender:
            appender.write(dump_bytes(records[3:]))
        rest = await read_until(capture, lambda frames: len(frames) >= 3)
        assert capture.running
    finally:
        capture.stop()
    frames = first + rest
    assert record_frames(frames) == records
    assert FrameKind.END not in [f.kind for f in frames]


def test_missing_source_is_a_device_error(tmp_path):
    """A missing device or dump path is a DeviceError naming the path."""
    missing = tmp_path / "absent"
    with pytest.raises(DeviceError, match=rf"cannot open {missing}: no such device or file"):
        open_source(missing, seek_newest=False)


def test_missing_source_fails_capture_open(tmp_path):
    """Capture.open() refuses a missing source before starting any process."""
    capture = Capture(SourceConfig(path=tmp_path / "absent"), seek_newest=False)
    with pytest.raises(DeviceError, match="no such device or file"):
        capture.open()
    assert capture.pid is None


def test_directory_source_is_a_device_error(tmp_path):
    """A directory given as the source is refused at open, not at the first read."""
    with pytest.raises(DeviceError, match="is a directory"):
        open_source(tmp_path, seek_newest=False)


def test_source_under_a_regular_file_is_a_device_error(tmp_path):
    """A path below a regular file (ENOTDIR) is a DeviceError with the OS's reason."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DeviceError, match="Not a directory"):
        open_source(blocker / "kmsg", seek_newest=False)


def test_dump_file_is_opened_blocking(tmp_path):
    """A dump file is handed over as a plain blocking fd (the worker reads it with read())."""
    dump = tmp_path / "kmsg.dump"
    dump.write_bytes(b"6,1,2,-;x\n")
    fd, is_device = open_source(dump, seek_newest=True)
    try:
        assert is_device is False
        assert os.get_blocking(fd)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # seek_newest applies to the device only
    finally:
        os.close(fd)


async def test_dump_records_with_nul_are_rejected_and_0x01_survives_as_text(tmp_path):
    """A record with a raw NUL (no kernel writes one) is a REJECTED frame; a raw 0x01 arrives as text."""
    frames = await read_dump_file(
        tmp_path / "raw.dump", b"6,1,10,-;nul\x00here\n6,2,20,-;\x01ctl start\n6,3,30,-;plain\n"
    )
    assert [r.message for r in record_frames(frames)] == ["\x01ctl start", "plain"]
    assert [f.payload for f in frames if f.kind is FrameKind.REJECTED] == [RejectReason.NUL]
    assert frames[-1].kind is FrameKind.END


async def test_overlong_dump_line_is_rejected_and_the_rest_arrives(tmp_path):
    """A 200 KB line (longer than any kernel record) is one REJECTED frame; the records around it arrive."""
    records = sample_records(4)
    content = (
        dump_bytes(records[:2]) + b"6,99,1,-;" + b"y" * 200_000 + b"\n" + dump_bytes(records[2:])
    )
    frames = await read_dump_file(tmp_path / "long.dump", content)
    assert record_frames(frames) == records
    assert [f.payload for f in frames if f.kind is FrameKind.REJECTED] == [RejectReason.TOO_LONG]
    assert frames[-1].kind is FrameKind.END


def test_framer_keeps_records_up_to_the_kernel_limit():
    """A record of exactly MAX_RECORD_BYTES is a record; one byte more is rejected."""
    head = b"6,1,2,-;"
    fits = head + b"a" * (MAX_RECORD_BYTES - len(head) - 1) + b"\n"
    framer = DumpFramer()
    frames = framer.feed(fits + fits[:-1] + b"b\n" + b"6,3,4,-;end\n") + framer.finish()
    assert frames[0] == fits
    assert frames[1] == b"\x01\x06" + RejectReason.TOO_LONG
    assert frames[2] == b"6,3,4,-;end\n"


_dump_piece = st.one_of(
    st.sampled_from([b"\n", b" K=v\n", b"\x00", b"\x01", b" ", b"6,1,2,-;x"]),
    st.binary(max_size=20),
    st.integers(min_value=1, max_value=3 * MAX_RECORD_BYTES).map(lambda n: b"z" * n),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_dump_piece, max_size=30).map(b"".join), st.lists(st.integers(0, 40_000)))
def test_framer_matches_the_reference_whatever_the_chunking(dump, cuts):
    """However a dump is cut into chunks, the framer's frames equal the obvious reference framing."""
    framer = DumpFramer()
    frames = []
    start = 0
    for cut in sorted(min(cut, len(dump)) for cut in cuts):
        frames += framer.feed(dump[start:cut])
        start = cut
    frames += framer.feed(dump[start:]) + framer.finish()
    assert frames == reference_frames(dump)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_dump_piece, max_size=30).map(b"".join),
    st.lists(st.integers(0, 40_000)),
    st.booleans(),
)
def test_framer_blocks_are_the_reference_frames_joined(dump, cuts, clean):
    """feed_block (the capture process's fast path) gives the reference frames, each followed by a NUL."""
    if clean:  # the fast path takes chunks without NUL and 0x01
        dump = dump.replace(b"\x00", b"").replace(b"\x01", b"")
    framer = DumpFramer()
    blocks = []
    count = 0
    start = 0
    for cut in [*sorted(min(cut, len(dump)) for cut in cuts), len(dump)]:
        block, records = framer.feed_block(dump[start:cut])
        blocks.append(block)
        count += records
        start = cut
    last = framer.finish()
    frames = reference_frames(dump)
    assert b"".join(blocks) + b"".join(f + b"\x00" for f in last) == b"".join(
        f + b"\x00" for f in frames
    )
    assert count + len(last) == len(frames)


def test_a_frame_larger_than_the_parse_window_still_arrives(tmp_path):
    """A frame longer than the parent's parse window is returned whole, not waited on forever."""
    capture = Capture(SourceConfig(path=tmp_path / "unused"), seek_newest=False)
    big = b"6,1,2,-;" + b"w" * (PARSE_WINDOW_BYTES * 2) + b"\n"
    capture._received(big + b"\x00" + b"6,2,3,-;next\n\x00")
    assert [frame.payload for frame in capture._parse()] == [big]
    assert [frame.payload for frame in capture._parse()] == [b"6,2,3,-;next\n"]


async def test_read_window_splits_records_and_control_frames(tmp_path):
    """read_window hands over raw records and, apart, the control frames of the same window."""
    capture = Capture(SourceConfig(path=tmp_path / "unused"), seek_newest=False)
    capture._received(b"6,1,2,-;a\n\x006,2,3,-;b\n\x00")
    plain = await capture.read_window()
    assert (plain.records, plain.controls) == ([b"6,1,2,-;a\n", b"6,2,3,-;b\n"], [])
    capture._received(b"6,3,4,-;c\n\x00\x01\x02\x00\x01\x04\x00")
    capture._ended()
    mixed = await capture.read_window()
    assert mixed.records == [b"6,3,4,-;c\n"]
    assert [frame.kind for frame in mixed.controls] == [FrameKind.OVERRUN, FrameKind.END]
    end = await capture.read_window()
    assert (end.records, end.controls) == ([], [])
