"""Start-up checks and bad input, through the real command line.

Every refusal happens before reading, with a non-zero exit and one line a person can act
on; malformed records in a dump are counted and skipped while the good ones ship.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.source.parser import Record, render_record
from tests.conftest import ForwarderFactory
from tests.support.forwarder import read_ndjson, records_with_tag, render_toml
from tests.support.kernel import inject, requires_kernel, unique_tag
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(120)  # forwarder processes, some reading the real ring


def _command(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "forwarder", *args],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(render_toml(config), encoding="utf-8")
    return path


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("kmsg-forwarder:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unknown_config_key_exits_2_naming_the_key(tmp_path: Path) -> None:
    """A misspelt key is refused with exit 2 and its full path, before anything runs."""
    config = _write_config(
        tmp_path / "c.toml",
        {
            "state_dir": str(tmp_path),
            "sinks": {"out": {"type": "file", "path": "/tmp/x", "pth": 1}},
        },
    )
    result = _command("run", "--config", str(config))
    assert result.returncode == 2
    assert "sinks.out.pth" in _one_line_error(result)


def test_corrupt_checkpoint_exits_3_and_is_never_treated_as_empty(tmp_path: Path) -> None:
    """A checkpoint file that is not valid JSON stops the start with exit 3 and its path."""
    state = tmp_path / "state"
    (state / "checkpoints").mkdir(parents=True)
    (state / "checkpoints" / "out.json").write_text('{"boot_id": "x", "seq": ')
    dump = tmp_path / "dump"
    dump.write_bytes(b"6,1,1,-;hello\n")
    config = _write_config(
        tmp_path / "c.toml",
        {"state_dir": str(state), "source": {"path": str(dump)},
         "sinks": {"out": {"type": "file", "path": str(tmp_path / "out")}}},
    )  # fmt: skip
    result = _command("run", "--config", str(config))
    assert result.returncode == 3
    message = _one_line_error(result)
    assert "corrupt" in message
    assert "out.json" in message
    assert not (tmp_path / "out").exists()


def test_missing_device_exits_3_before_reading(tmp_path: Path) -> None:
    """A source path that does not exist is reported with exit 3 and the path."""
    config = _write_config(
        tmp_path / "c.toml",
        {"state_dir": str(tmp_path / "state"), "source": {"path": str(tmp_path / "nope")}},
    )
    result = _command("run", "--config", str(config))
    assert result.returncode == 3
    assert str(tmp_path / "nope") in _one_line_error(result)


@requires_kernel
def test_unprivileged_user_gets_told_that_cap_syslog_is_needed(tmp_path: Path) -> None:
    """Without root or CAP_SYSLOG, opening /dev/kmsg fails with a hint at the fix."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop privileges")
    restrict = Path("/proc/sys/kernel/dmesg_restrict").read_text().strip()
    if restrict != "1":
        pytest.skip("kernel.dmesg_restrict=0 lets any user read the kernel log")
    # pytest's tmp_path sits under a root-only directory: use one the user can reach.
    with tempfile.TemporaryDirectory(prefix="kft-") as shared:
        workdir = Path(shared)
        workdir.chmod(0o777)
        state = workdir / "state"
        state.mkdir()
        state.chmod(0o777)
        config = _write_config(workdir / "c.toml", {"state_dir": str(state)})
        config.chmod(0o644)
        result = _command("run", "--config", str(config), user="65534")
    assert result.returncode == 3, result.stderr
    assert "CAP_SYSLOG" in _one_line_error(result)


def test_malformed_dump_records_are_counted_and_skipped(tmp_path: Path) -> None:
    """Bad records in a dump are logged as parse errors; every good record is shipped."""
    good = [render_record(Record(1, 6, seq, seq * 10, "-", f"good {seq}")) for seq in range(5)]
    bad = [b"no semicolon here\n", b"6,notanumber,1,-;text\n", b";\n"]
    dump = tmp_path / "dump"
    dump.write_bytes(good[0] + bad[0] + good[1] + good[2] + bad[1] + good[3] + bad[2] + good[4])
    out = tmp_path / "out.ndjson"
    config = _write_config(
        tmp_path / "c.toml",
        {"state_dir": str(tmp_path / "state"), "source": {"path": str(dump)},
         "sinks": {"out": {"type": "file", "path": str(out)}}},
    )  # fmt: skip
    result = _command("run", "--config", str(config), "--log-format", "json")
    assert result.returncode == 0, result.stderr
    messages = [event["message"] for event in read_ndjson(out)]
    assert messages == [f"good {seq}" for seq in range(5)]
    log_events = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert sum(1 for event in log_events if event["event"] == "parse_error") == len(bad)


@requires_kernel
def test_default_config_prints_json_lines_on_stdout(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """With no sink configured, records come out on stdout as JSON lines (what make run does)."""
    forwarder = forwarder_factory({"state_dir": str(tmp_path / "state")}).start()
    tag = unique_tag()
    inject([f"{tag} to stdout"])
    stdout = forwarder.workdir / "stdout"
    wait_until(lambda: records_with_tag(read_ndjson(stdout), tag))
    assert forwarder.stop() == 0
    (record,) = records_with_tag(read_ndjson(stdout), tag)
    assert record["message"] == f"{tag} to stdout"
    assert all(line.startswith(b"{") for line in stdout.read_bytes().splitlines())


@requires_kernel
def test_status_reports_ring_bounds_checkpoint_and_lag(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any]
) -> None:
    """`status` shows the ring's oldest/newest seq, the boot id and the sink's checkpoint lag."""
    forwarder = forwarder_factory(file_sink_config).start()
    tag = unique_tag()
    inject([f"{tag} status"])
    out = Path(file_sink_config["sinks"]["out"]["path"])
    wait_until(lambda: records_with_tag(read_ndjson(out), tag))
    assert forwarder.stop() == 0
    inject([f"{tag} after stop {index}" for index in range(3)])
    result = _command("status", "--config", str(forwarder.config_path))
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert report["boot_id"] == boot_id
    ring = report["ring"]
    assert ring["oldest_seq"] <= ring["newest_seq"]
    sink = report["sinks"]["out"]
    assert sink["checkpoint"]["boot_id"] == boot_id
    assert sink["lag_records"] >= 3
    assert sink["lag_records"] == ring["newest_seq"] - sink["checkpoint"]["seq"]


def test_unwritable_state_dir_exits_3_naming_it(tmp_path: Path) -> None:
    """A state dir that cannot be created or written stops the start with exit 3 and its path."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state dir should go")
    config = _write_config(
        tmp_path / "c.toml",
        {"state_dir": str(blocker / "state"), "source": {"path": str(tmp_path / "dump")}},
    )
    (tmp_path / "dump").write_bytes(b"6,1,1,-;hello\n")
    result = _command("run", "--config", str(config))
    assert result.returncode == 3
    message = _one_line_error(result)
    assert str(blocker / "state") in message
    assert "not writable" in message


def test_metrics_port_in_use_exits_3_with_the_address(tmp_path: Path) -> None:
    """A metrics listener that cannot bind stops the start with exit 3 and the address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        dump = tmp_path / "dump"
        dump.write_bytes(b"6,1,1,-;hello\n")
        config = _write_config(
            tmp_path / "c.toml",
            {"state_dir": str(tmp_path / "state"), "source": {"path": str(dump)},
             "metrics": {"listen": address}},
        )  # fmt: skip
        result = _command("run", "--config", str(config))
    assert result.returncode == 3, result.stderr
    assert address in _one_line_error(result)


def test_huge_seq_nul_and_overlong_lines_do_not_stop_the_forwarder(tmp_path: Path) -> None:
    """A seq of 2^64, a raw NUL and a 200 KB line are counted and skipped; exit 0, every good record shipped."""
    good = [render_record(Record(1, 6, seq, seq * 10, "-", f"good {seq}")) for seq in range(4)]
    dump = tmp_path / "dump"
    dump.write_bytes(
        good[0] + f"6,{2**64},5,-;beyond u64\n".encode() + good[1]
        + b"6,50,5,-;nul\x00byte\n" + good[2] + b"6,60,5,-;" + b"L" * 200_000 + b"\n" + good[3]
    )  # fmt: skip
    out = tmp_path / "out.ndjson"
    config = _write_config(
        tmp_path / "c.toml",
        {"state_dir": str(tmp_path / "state"), "source": {"path": str(dump)},
         "sinks": {"out": {"type": "file", "path": str(out)}}},
    )  # fmt: skip
    result = _command("run", "--config", str(config), "--log-format", "json")
    assert result.returncode == 0, result.stderr
    assert [event["message"] for event in read_ndjson(out)] == [f"good {seq}" for seq in range(4)]
    log_events = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [e["error"] for e in log_events if e["event"] == "parse_error"] == [
        "seq 18446744073709551616 is beyond what the kernel writes (<= 18446744073709551615)"
    ]
    rejected: dict[str, int] = {}
    for event in log_events:
        if event["event"] == "records_rejected":
            for reason, count in event["counts"].items():
                rejected[reason] = rejected.get(reason, 0) + count
    assert rejected == {"nul_byte": 1, "too_long": 1}
