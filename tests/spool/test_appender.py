"""The reader's way into the spool: small chunks gathered, a crit-or-worse one written and synced at once."""

from __future__ import annotations

from array import array
from pathlib import Path

import pytest

from forwarder.options import Level
from forwarder.spool.appender import SpoolAppender
from forwarder.spool.config import SpoolConfig
from forwarder.spool.spool import Spool
from tests.spool.helpers import BOOT, record
from tests.support.wait import wait_until

KERN_INFO, KERN_ERR, KERN_CRIT = 6, 3, 2  # prefix = facility << 3 | level, facility kern


def _spool(directory: Path, **options: object) -> Spool:
    spool = Spool(SpoolConfig(**options), directory)  # type: ignore[arg-type]
    spool.open(BOOT, 0)
    return spool


async def test_small_chunks_are_gathered_until_flushed(tmp_path: Path) -> None:
    """Ordinary records wait for the gathered write; nothing is synced for them at once."""
    spool = _spool(tmp_path)
    appender = SpoolAppender(spool, lambda: None)
    await appender.append(array("Q", [1, 2]), [record(1), record(2)], [KERN_INFO, 14])
    assert spool.stats.appended_records == 0
    appender.flush()
    assert spool.stats.appended_records == 2
    assert spool.stats.fsyncs == 0
    spool.close()


@pytest.mark.parametrize(
    ("min_level", "prefix", "synced"),
    [(None, KERN_CRIT, True), (None, KERN_ERR, False), (Level(3), KERN_ERR, True)],
    ids=["crit", "err-under-default", "err-when-configured"],
)
async def test_a_record_at_fsync_min_level_or_worse_is_written_and_synced_at_once(
    tmp_path: Path, min_level: Level | None, prefix: int, synced: bool
) -> None:
    """What gathered goes first, in order; the urgent chunk's fsync starts without waiting."""
    options = {} if min_level is None else {"fsync_min_level": min_level}
    spool = _spool(tmp_path, **options)
    appender = SpoolAppender(spool, lambda: None)
    await appender.append(array("Q", [1]), [record(1)], [KERN_INFO])
    await appender.append(array("Q", [2]), [record(2, level=prefix)], [prefix])
    if synced:
        assert spool.stats.appended_records == 2  # written before append returned
        assert wait_until(lambda: spool.stats.fsyncs == 1)
    else:
        assert spool.stats.appended_records == 0  # gathered like any other record
    spool.close()
