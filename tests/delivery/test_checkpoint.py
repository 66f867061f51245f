"""Checkpoint files: durable atomic saves, and clear errors for unusable ones."""

from __future__ import annotations

import asyncio
import os
import threading

import orjson
import pytest

from forwarder.delivery.checkpoint import Checkpoint, CheckpointStore, CheckpointWriter
from forwarder.errors import CheckpointCorruptError, StateError

BOOT = "3f1c0000-0000-4000-8000-000000000001"


@pytest.fixture
def store(tmp_path):
    """A prepared store in a fresh state directory."""
    checkpoints = CheckpointStore(tmp_path / "state")
    checkpoints.prepare()
    return checkpoints


def test_missing_checkpoint_is_none(store):
    """A sink that never saved has no checkpoint (None), not an error."""
    assert store.load("never") is None


def test_save_then_load_roundtrips(store):
    """What save() wrote, load() gives back, with an updated_at timestamp."""
    saved = store.save("kafka", BOOT, 1234, 1_764_182_530_123_456_789)
    loaded = store.load("kafka")
    assert loaded == saved
    assert (loaded.boot_id, loaded.seq, loaded.clock_offset_ns) == (
        BOOT,
        1234,
        1_764_182_530_123_456_789,
    )
    assert loaded.updated_at.endswith("Z")


def test_file_format_is_the_documented_json(store):
    """The file is a JSON object with boot_id, seq, clock_offset_ns and updated_at."""
    store.save("out", BOOT, -1, 5)
    data = orjson.loads(store.path("out").read_bytes())
    assert set(data) == {"boot_id", "seq", "clock_offset_ns", "updated_at"}
    assert (data["boot_id"], data["seq"], data["clock_offset_ns"]) == (BOOT, -1, 5)


def test_save_replaces_and_leaves_no_temp_file(store):
    """A second save replaces the first and no temporary file stays behind."""
    store.save("out", BOOT, 1, 5)
    store.save("out", BOOT, 2, 5)
    assert store.load("out").seq == 2
    assert sorted(p.name for p in store.directory.iterdir()) == ["out.json"]


def test_sinks_have_separate_checkpoints(store):
    """Each sink's checkpoint is its own file."""
    store.save("a", BOOT, 1, 0)
    store.save("b", BOOT, 9, 0)
    assert (store.load("a").seq, store.load("b").seq) == (1, 9)


def test_load_without_updated_at_is_accepted(store):
    """A file without updated_at (written by hand) is still a checkpoint."""
    store.path("old").write_bytes(b'{"boot_id": "b", "seq": 3, "clock_offset_ns": 0}')
    assert store.load("old") == Checkpoint("b", 3, 0, "")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'"text"',
        b'{"boot_id": "b", "seq": 3}',
        b'{"boot_id": "b", "seq": "3", "clock_offset_ns": 0}',
        b'{"boot_id": 7, "seq": 3, "clock_offset_ns": 0}',
        b'{"boot_id": "b", "seq": 3, "clock_offset_ns": 1.5}',
        b'{"boot_id": "b", "seq": -2, "clock_offset_ns": 0}',
        b'{"boot_id": "b", "seq": true, "clock_offset_ns": 0}',
    ],
    ids=[
        "empty",
        "broken-json",
        "not-utf8",
        "list",
        "null",
        "string",
        "missing-field",
        "seq-string",
        "boot-id-number",
        "offset-float",
        "seq-below-minus-one",
        "seq-bool",
    ],
)
def test_corrupt_checkpoint_is_an_error_naming_the_file(store, content):
    """A checkpoint file that is not a valid checkpoint raises CheckpointCorruptError, never None."""
    store.path("out").write_bytes(content)
    with pytest.raises(CheckpointCorruptError, match=r"out\.json is corrupt"):
        store.load("out")


def test_unreadable_checkpoint_is_a_state_error(store):
    """A checkpoint path that cannot be read (here a directory) raises StateError."""
    store.path("out").mkdir()
    with pytest.raises(StateError, match="cannot read checkpoint"):
        store.load("out")


def test_prepare_refuses_a_state_dir_under_a_regular_file(tmp_path):
    """prepare() raises StateError when the state directory cannot be created (root ignores modes)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="not writable"):
        CheckpointStore(blocker / "state").prepare()


def test_save_failure_is_a_state_error(tmp_path):
    """A checkpoint that cannot be written raises StateError naming it, not a bare OSError."""
    store = CheckpointStore(tmp_path / "state")
    store.prepare()
    store.directory.rmdir()
    store.directory.parent.rmdir()
    (tmp_path / "state").write_text("now a file")
    with pytest.raises(StateError, match="cannot write checkpoint"):
        store.save("out", BOOT, 1, 0)


def test_prepare_creates_the_directory(tmp_path):
    """prepare() creates <state_dir>/checkpoints and leaves no probe file."""
    store = CheckpointStore(tmp_path / "deep" / "state")
    store.prepare()
    assert store.directory.is_dir()
    assert list(store.directory.iterdir()) == []


class GatedStore(CheckpointStore):
    """Saves wait (bounded) until the test opens the gate; every saved seq is noted."""

    def __init__(self, state_dir):
        super().__init__(state_dir)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.saved = []

    def save(self, sink, boot_id, seq, clock_offset_ns):
        """Wait for the gate, note the seq, save."""
        self.entered.set()
        assert self.gate.wait(timeout=10)
        self.saved.append(seq)
        return super().save(sink, boot_id, seq, clock_offset_ns)


async def test_writer_writes_the_latest_position_in_order(tmp_path):
    """Positions handed over during a write are not all written: the latest one is, next, in order."""
    store = GatedStore(tmp_path / "state")
    store.prepare()
    seen = []
    writer = CheckpointWriter(store, "a", 0, seen.append)
    writer.advance(BOOT, 10)
    assert await asyncio.to_thread(store.entered.wait, 10)  # the write of 10 is under way
    for seq in (11, 12, 13):
        writer.advance(BOOT, seq)
    store.gate.set()
    await writer.flush()
    assert store.saved == [10, 13]
    assert seen == [10, 13]
    assert store.load("a").seq == 13


async def test_a_failed_write_is_raised_by_the_writer(tmp_path):
    """A checkpoint that cannot be written is raised by flush() and by the next advance()."""
    store = CheckpointStore(tmp_path / "state")
    store.prepare()
    writer = CheckpointWriter(store, "a", 0, lambda _seq: None)
    (tmp_path / "state" / "checkpoints").chmod(0o500)
    try:
        writer.advance(BOOT, 1)
        if os.geteuid() == 0:  # root writes anyway: make the directory vanish instead
            store.directory = tmp_path / "gone"
        with pytest.raises(StateError):
            await writer.flush()
        with pytest.raises(StateError):
            writer.advance(BOOT, 2)
    finally:
        (tmp_path / "state" / "checkpoints").chmod(0o700)


async def test_writes_are_spaced_but_flush_writes_the_last_position_at_once(tmp_path):
    """Positions confirmed soon after a write wait for the interval; flush() does not wait for it."""
    store = GatedStore(tmp_path / "state")
    store.prepare()
    store.gate.set()
    writer = CheckpointWriter(store, "a", 0, lambda _seq: None, min_interval_s=3600)
    writer.advance(BOOT, 1)
    assert await asyncio.to_thread(store.entered.wait, 10)
    writer.advance(BOOT, 2)
    writer.advance(BOOT, 3)
    await asyncio.wait_for(writer.flush(), timeout=10)
    assert store.saved == [1, 3]
    assert store.load("a").seq == 3


async def test_batches_confirmed_one_by_one_after_each_write_still_wait_for_the_interval(tmp_path):
    """A position handed over after the last write ended waits for the interval from its start."""
    store = GatedStore(tmp_path / "state")
    store.prepare()
    store.gate.set()
    saved = asyncio.Event()
    writer = CheckpointWriter(store, "a", 0, lambda _seq: saved.set(), min_interval_s=3600)
    writer.advance(BOOT, 1)
    await asyncio.wait_for(saved.wait(), timeout=10)  # the first write is done
    for seq in (2, 3, 4):  # one batch at a time, each after the write before ended
        writer.advance(BOOT, seq)
        await asyncio.sleep(0)
    assert store.saved == [1]  # spaced: nothing written yet
    await asyncio.wait_for(writer.flush(), timeout=10)
    assert store.saved == [1, 4]
