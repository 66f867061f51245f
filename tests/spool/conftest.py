"""Fixtures shared by the spool tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.machine import tmpfs


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted in a temp dir, unmounted afterwards (needs root)."""
    with tmpfs(tmp_path / "fs") as mountpoint:
        yield mountpoint


@pytest.fixture(autouse=True)
def no_syncer_thread_left() -> Iterator[None]:
    """Every spool a test starts a syncer thread for is closed by the test (no thread leaks)."""
    yield
    left = [thread for thread in threading.enumerate() if thread.name == "spool-syncer"]
    assert left == [], "a spool with a syncer thread was not closed"
