"""``kmsg-forwarder spool check`` and the spool part of ``status``."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
import structlog

from forwarder import cli
from forwarder.delivery.checkpoint import CheckpointStore
from tests.spool.helpers import open_spool, record


@pytest.fixture
def main(capsys):
    """Call cli.main(argv) in-process; returns (exit code, stdout, stderr lines), logging restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*argv: str) -> tuple[int, str, list[str]]:
        capsys.readouterr()  # what the test's own set-up logged
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err.splitlines()

    yield run
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _config(tmp_path: Path) -> Path:
    dump = tmp_path / "kmsg.dump"
    dump.write_text("6,10,1,-;a\n6,11,2,-;b\n6,12,3,-;c\n")
    (tmp_path / "boot_id").write_text("boot-1\n")
    config = tmp_path / "forwarder.toml"
    config.write_text(
        f"""
state_dir = "{tmp_path}/state"
[source]
path = "{dump}"
boot_id_path = "{tmp_path}/boot_id"
[spool]
segment_bytes = 1024
[sinks.out]
type = "file"
path = "{tmp_path}/out.ndjson"
"""
    )
    return config


def _fill(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "state" / "spool", boot_id="boot-1", segment_bytes=1024)
    spool.append(list(range(100)), [record(seq) for seq in range(100)])
    spool.close()


def test_spool_check_passes_a_clean_spool(tmp_path: Path, main) -> None:
    """A clean spool: exit 0 and a summary with its seq range and record count."""
    config = _config(tmp_path)
    _fill(tmp_path)
    code, out, err = main("spool", "check", "-c", str(config))
    assert code == 0, err
    report = orjson.loads(out)
    assert report["damaged"] is False
    [boot] = report["boots"]
    assert (boot["boot_id"], boot["oldest_seq"], boot["newest_seq"]) == ("boot-1", 0, 99)
    assert boot["records"] == 100


def test_spool_check_finds_a_flipped_bit_and_exits_non_zero(tmp_path: Path, main) -> None:
    """One flipped bit anywhere in a frame: exit 4 and a line naming the segment."""
    config = _config(tmp_path)
    _fill(tmp_path)
    first = min((tmp_path / "state" / "spool" / "boot-1").glob("*.seg"))
    data = bytearray(first.read_bytes())
    data[300] ^= 0x10
    first.write_bytes(bytes(data))
    code, out, err = main("spool", "check", "-c", str(config))
    assert code == 4
    assert orjson.loads(out)["damaged"] is True
    assert first.name in err[-1]
    assert first.exists()  # check never changes the spool


def test_status_shows_the_spool_range_size_and_each_sinks_lag(tmp_path: Path, main) -> None:
    """status: the spool's boots, seq range and bytes, and how far each sink is behind in it."""
    config = _config(tmp_path)
    _fill(tmp_path)
    store = CheckpointStore(tmp_path / "state")
    store.prepare()
    store.save("out", "boot-1", 59, 0)
    code, out, err = main("status", "-c", str(config))
    assert code == 0, err
    report = orjson.loads(out)
    spool = report["spool"]
    assert spool["bytes"] > 0
    assert spool["boots"][0]["oldest_seq"] == 0
    assert spool["boots"][0]["newest_seq"] == 99
    assert report["sinks"]["out"]["spool_lag_records"] == 40


def test_spool_without_check_is_a_usage_error(tmp_path: Path, main) -> None:
    """`spool` alone is a usage error (exit 2), never a run."""
    code, _, err = main("spool", "-c", str(_config(tmp_path)))
    assert code == 2
    assert "spool check" in err[-1]
