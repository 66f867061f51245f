"""``[spool]`` in the config: defaults, levels by name, bounds and cross-field checks naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.config import parse_config
from forwarder.errors import ConfigError
from forwarder.spool.config import MIN_SEGMENT_BYTES


def test_defaults_put_a_256_mib_spool_in_the_state_dir() -> None:
    """No [spool] table: on, 256 MiB, interval fsync plus crit at once, drop_oldest, under state_dir."""
    config = parse_config({"state_dir": "/var/lib/kf"})
    spool = config.spool
    assert (spool.enabled, spool.max_bytes, spool.fsync, spool.when_full) == (
        True,
        256 * 1024 * 1024,
        "interval",
        "drop_oldest",
    )
    assert (spool.fsync_interval_ms, int(spool.fsync_min_level)) == (1000, 2)
    assert config.spool_path == Path("/var/lib/kf/spool")
    assert spool.effective_segment_bytes() == 8 * 1024 * 1024


def test_path_level_name_and_small_bounds_are_taken() -> None:
    """A path, a level by name and a small max_bytes (segments scale down to fit it)."""
    config = parse_config(
        {"spool": {"path": "/srv/spool", "fsync_min_level": "err", "max_bytes": 4096}}
    )
    assert config.spool_path == Path("/srv/spool")
    assert int(config.spool.fsync_min_level) == 3
    assert MIN_SEGMENT_BYTES <= config.spool.effective_segment_bytes() <= 4096


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"max_bytes": 100}, r"spool\.max_bytes"),
        ({"fsync": "sometimes"}, r"spool\.fsync"),
        ({"when_full": "drop_newest"}, r"spool\.when_full"),
        ({"fsync_min_level": "loud"}, r"spool\.fsync_min_level"),
        (
            {"segment_bytes": 8192, "max_bytes": 4096},
            r"spool\.segment_bytes: .*larger than max_bytes",
        ),
        ({"size": 1}, r"spool\.size: unknown key"),
    ],
)
def test_bad_values_are_refused_naming_the_key(table: dict[str, object], message: str) -> None:
    """Each bad value is one ConfigError line naming spool.<key>."""
    with pytest.raises(ConfigError, match=message):
        parse_config({"spool": table})
