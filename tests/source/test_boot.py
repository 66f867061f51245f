"""The boot's identity: its id from the boot_id file, and the clock offset its records keep."""

from __future__ import annotations

import pytest

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.errors import StateError
from forwarder.source.boot import boot_clock_offset, clock_offset_now_ns, read_boot_id

BOOT = "0f0f0f0f-0000-4000-8000-000000000004"


def checkpoint(boot_id: str, offset_ns: int) -> Checkpoint:
    """A checkpoint of ``boot_id`` stamped with ``offset_ns``."""
    return Checkpoint(
        boot_id=boot_id, seq=7, clock_offset_ns=offset_ns, updated_at="2026-12-06T00:00:00Z"
    )


def test_a_checkpoint_of_this_boot_keeps_its_offset_and_reports_the_drift():
    """Same boot: the stored offset is kept (same timestamps on re-send) and the drift reported."""
    offset, drift = boot_clock_offset(BOOT, [None, checkpoint(BOOT, 5_000)], current_ns=7_000)
    assert (offset, drift) == (5_000, 2_000)


def test_without_a_checkpoint_of_this_boot_the_current_offset_is_used():
    """Another boot's checkpoint (a reboot) or none: the current offset, no drift."""
    assert boot_clock_offset(BOOT, [checkpoint("old-boot", 5_000), None], current_ns=7_000) == (
        7_000,
        None,
    )


def test_the_current_offset_is_in_whole_microseconds():
    """ts_usec has microsecond precision, so the offset has too."""
    assert clock_offset_now_ns() % 1000 == 0


def test_an_empty_or_missing_boot_id_file_is_a_state_error(tmp_path):
    """A missing or empty boot_id file stops start-up with a StateError naming the file."""
    empty = tmp_path / "boot_id"
    empty.write_text("\n")
    with pytest.raises(StateError, match="is empty"):
        read_boot_id(empty)
    with pytest.raises(StateError, match="cannot read boot id"):
        read_boot_id(tmp_path / "missing")
    empty.write_text(BOOT + "\n")
    assert read_boot_id(empty) == BOOT
