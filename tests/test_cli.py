"""The command line: check prints the masked config, errors are one line with the right exit code."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import structlog

from forwarder import cli
from forwarder.delivery.checkpoint import CheckpointStore

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-Passw0rd"


def forwarder(*args, env=None):
    """Run `python -m forwarder ARGS` and return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "forwarder", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


@pytest.fixture
def main(capsys):
    """Call cli.main(argv) in-process; returns (exit code, stdout, stderr lines), logging restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*argv):
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err.splitlines()

    yield run
    structlog.reset_defaults()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def write(path, text):
    """Write text to path and return the path."""
    path.write_text(text)
    return path


def test_check_prints_effective_config_with_secrets_masked(tmp_path):
    """`check` exits 0 and prints the whole effective config, with a ${ENV} SASL password masked."""
    config = write(
        tmp_path / "forwarder.toml",
        f"""
state_dir = "{tmp_path}/state"
[sinks.out]
type = "file"
path = "{tmp_path}/out.ndjson"
[sinks.k]
type = "kafka"
bootstrap_servers = "broker-1:9092,broker-2:9092"
topic = "kmsg"
[sinks.k.sasl]
username = "forwarder"
password = "${{KF_TEST_PASSWORD}}"
""",
    )
    result = forwarder("check", "--config", str(config), env={"KF_TEST_PASSWORD": SECRET})
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout
    assert SECRET not in result.stderr
    effective = orjson.loads(result.stdout)
    assert effective["state_dir"] == f"{tmp_path}/state"
    assert effective["source"]["path"] == "/dev/kmsg"
    assert effective["sinks"]["out"] == {
        "batch": None,
        "events": ["kmsg", "gap", "kernel_event"],
        "kernel_event_classes": None,
        "type": "file",
        "path": f"{tmp_path}/out.ndjson",
        "fsync": True,
    }
    assert effective["kernel_events"] == {
        "enabled": True,
        "disabled_classes": [],
        "idle_flush_s": 2.0,
        "rules": [],
    }
    kafka = effective["sinks"]["k"]
    assert kafka["bootstrap_servers"] == ["broker-1:9092", "broker-2:9092"]
    assert kafka["acks"] == "all"
    assert kafka["sasl"]["username"] == "forwarder"
    assert kafka["sasl"]["password"] == "***"


def test_check_does_not_print_a_password_file_content(tmp_path, main):
    """A password read from password_file is not in the output; the file's path is."""
    secret_file = write(tmp_path / "kafka-password", SECRET + "\n")
    config = write(
        tmp_path / "forwarder.toml",
        f"""
[sinks.k]
type = "kafka"
bootstrap_servers = ["broker:9092"]
topic = "kmsg"
sasl = {{ username = "u", password_file = "{secret_file}" }}
""",
    )
    code, out, err = main("check", "-c", str(config))
    assert code == 0, err
    assert SECRET not in out
    assert orjson.loads(out)["sinks"]["k"]["sasl"]["password_file"] == str(secret_file)


def test_check_without_config_shows_the_stdout_default(tmp_path, main, monkeypatch):
    """`check` with no config file shows the default stdout sink."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    code, out, err = main("check")
    assert code == 0, err
    effective = orjson.loads(out)
    assert effective["sinks"] == {
        "stdout": {
            "batch": None,
            "events": ["kmsg", "gap", "kernel_event"],
            "kernel_event_classes": None,
            "type": "stdout",
        }
    }
    assert effective["state_dir"] == f"{tmp_path}/kmsg-forwarder"


def test_unknown_key_exits_2_with_one_line_naming_it(tmp_path):
    """A config with an unknown key exits 2 and prints one line naming the key path."""
    config = write(
        tmp_path / "bad.toml", '[sinks.out]\ntype = "file"\npath = "/tmp/x"\nfsnyc = false\n'
    )
    result = forwarder("check", "--config", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert "sinks.out.fsnyc" in lines[0]
    assert lines[0].startswith("kmsg-forwarder: config error:")


def test_missing_env_variable_exits_2_naming_key_and_variable(tmp_path, main, monkeypatch):
    """An unset ${ENV} reference exits 2 with one line naming the key and the variable."""
    config = write(
        tmp_path / "env.toml", '[sinks.out]\ntype = "file"\npath = "${KF_TEST_NOT_SET}/x"\n'
    )
    monkeypatch.delenv("KF_TEST_NOT_SET", raising=False)
    code, _, err = main("check", "-c", str(config))
    assert code == 2
    assert err == [
        "kmsg-forwarder: config error: sinks.out.path: environment variable KF_TEST_NOT_SET is not set"
    ]


def test_invalid_toml_exits_2(tmp_path, main):
    """A config file that is not TOML exits 2 with one line naming the file."""
    config = write(tmp_path / "broken.toml", "[source\n")
    code, _, err = main("check", "-c", str(config))
    assert code == 2
    assert len(err) == 1
    assert "broken.toml is not valid TOML" in err[0]


def test_run_with_missing_device_exits_3_with_one_line(tmp_path):
    """`run` with a source path that does not exist exits 3 with one line naming the path."""
    missing = tmp_path / "no-such-kmsg"
    config = write(
        tmp_path / "forwarder.toml",
        f'state_dir = "{tmp_path}/state"\n[source]\npath = "{missing}"\n',
    )
    result = forwarder("run", "--config", str(config))
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"kmsg-forwarder: cannot start: cannot open {missing}: no such device or file"
    ]
    assert result.stdout == ""


def test_run_with_unusable_state_dir_exits_3(tmp_path, main):
    """`run` with a state directory that cannot be created exits 3 with one line."""
    blocker = write(tmp_path / "file", "")
    config = write(tmp_path / "forwarder.toml", f'state_dir = "{blocker}/state"\n')
    code, _, err = main("run", "-c", str(config))
    assert code == 3
    assert len(err) == 1
    assert err[0].startswith("kmsg-forwarder: cannot start: state directory")
    assert "not writable" in err[0]


def test_status_reports_ring_bounds_and_checkpoint_lag(tmp_path, main):
    """`status` on a dump shows the oldest/newest seq and each sink's checkpoint and lag."""
    dump = write(tmp_path / "kmsg.dump", "6,10,1,-;a\n SUBSYSTEM=net\n6,11,2,-;b\n6,12,3,-;c\n")
    boot_id = write(tmp_path / "boot_id", "boot-1\n")
    state = tmp_path / "state"
    store = CheckpointStore(state)
    store.prepare()
    store.save("out", "boot-1", 11, 0)
    config = write(
        tmp_path / "forwarder.toml",
        f"""
state_dir = "{state}"
[source]
path = "{dump}"
boot_id_path = "{boot_id}"
[sinks.out]
type = "file"
path = "{tmp_path}/out.ndjson"
[sinks.fresh]
type = "file"
path = "{tmp_path}/fresh.ndjson"
""",
    )
    code, out, err = main("status", "-c", str(config))
    assert code == 0, err
    report = orjson.loads(out)
    assert report["boot_id"] == "boot-1"
    assert report["ring"] == {"oldest_seq": 10, "newest_seq": 12}
    assert report["sinks"]["out"]["checkpoint"]["seq"] == 11
    assert report["sinks"]["out"]["lag_records"] == 1
    assert report["sinks"]["fresh"] == {"checkpoint": None}


def test_check_masks_header_values_and_url_passwords(tmp_path, main):
    """Secrets in HTTP headers or in a URL's user:password never appear in `check` output."""
    config = write(
        tmp_path / "forwarder.toml",
        f"""
state_dir = "{tmp_path}/state"
[sinks.web]
type = "http"
endpoint = "https://shipper:{SECRET}@logs.example.test/ingest"
headers = {{ Authorization = "Bearer {SECRET}", X-Api-Key = "{SECRET}" }}
""",
    )
    code, out, err = main("check", "-c", str(config))
    assert code == 0, err
    assert SECRET not in out
    web = orjson.loads(out)["sinks"]["web"]
    assert web["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
    assert web["endpoint"] == "https://shipper:***@logs.example.test/ingest"
