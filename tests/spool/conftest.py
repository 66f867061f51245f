"""Fixtures shared by the spool tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.machine import tmpfs


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted in a temp dir, unmounted afterwards (needs root)."""
    with tmpfs(tmp_path / "fs") as mountpoint:
        yield mountpoint
