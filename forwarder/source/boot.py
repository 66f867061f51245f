"""What identifies this boot: its id, and the clock offset that turns ts_usec into wall time."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.errors import StateError


def clock_offset_now_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, in whole microseconds (the precision of ts_usec).

    Whole microseconds keep ``timestamp_ns`` equal to what ``@timestamp`` says.
    """
    offset = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(
        time.CLOCK_MONOTONIC
    )
    return offset // 1000 * 1000


def read_boot_id(path: Any) -> str:
    """The boot id (a UUID) from ``path``; raise StateError if unreadable."""
    try:
        with open(path, encoding="ascii") as boot_id_file:  # noqa: PTH123 - path may be str
            boot_id = boot_id_file.read().strip()
    except OSError as error:
        raise StateError(f"cannot read boot id from {path}: {error.strerror}") from error
    if not boot_id:
        raise StateError(f"boot id file {path} is empty")
    return boot_id


def boot_clock_offset(
    boot_id: str, checkpoints: Iterable[Checkpoint | None], current_ns: int
) -> tuple[int, int | None]:
    """The clock offset to stamp this boot's records with, and how far ``current_ns`` drifted.

    A checkpoint of this boot keeps the offset its first records were stamped with: taking it
    again gives a re-sent record the same ``@timestamp``. Without one, ``current_ns`` (no
    drift, None).
    """
    for checkpoint in checkpoints:
        if checkpoint is not None and checkpoint.boot_id == boot_id:
            return checkpoint.clock_offset_ns, current_ns - checkpoint.clock_offset_ns
    return current_ns, None
