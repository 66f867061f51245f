"""Configuration: useful defaults, strict keys named by path, ${ENV} references, clear errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from forwarder.config import load_config, parse_config
from forwarder.errors import ConfigError
from forwarder.sinks import FileSinkConfig, KafkaSinkConfig, StdoutSinkConfig


def write_config(tmp_path, text):
    """Write a TOML config file and return its path."""
    path = tmp_path / "forwarder.toml"
    path.write_text(text)
    return path


def test_no_config_reads_dev_kmsg_into_stdout(monkeypatch):
    """With no file at all: /dev/kmsg, oldest first, all levels, one stdout sink."""
    monkeypatch.setenv("XDG_STATE_HOME", "/tmp/xdg-state")
    config = load_config(None)
    assert config.source.path == Path("/dev/kmsg")
    assert config.source.boot_id_path == Path("/proc/sys/kernel/random/boot_id")
    assert config.source.start_at == "oldest"
    assert config.source.min_level == 7
    assert config.host == socket.gethostname()
    assert config.state_dir == Path("/tmp/xdg-state/kmsg-forwarder")
    assert config.metrics.listen is None
    assert list(config.sinks) == ["stdout"]
    assert isinstance(config.sinks["stdout"], StdoutSinkConfig)


def test_empty_file_equals_defaults(tmp_path):
    """An empty TOML file gives the same config as no file."""
    assert load_config(write_config(tmp_path, "")) == load_config(None)


def test_full_config_is_typed(tmp_path):
    """A file with every table loads into typed values, including a sink's own batch."""
    path = write_config(
        tmp_path,
        """
host = "node-7"
state_dir = "/var/tmp/state"
[source]
path = "/tmp/dump"
start_at = "newest"
min_level = "warning"
[batch]
max_records = 10
linger_ms = 5
[retry]
initial_backoff_ms = 10
budget_s = 3.5
[metrics]
listen = "127.0.0.1:9108"
[sinks.out]
type = "file"
path = "/tmp/out.ndjson"
batch = { max_records = 2 }
""",
    )
    config = load_config(path)
    assert config.host == "node-7"
    assert config.source.start_at == "newest"
    assert config.source.min_level == 4
    assert (config.batch.max_records, config.batch.linger_ms) == (10, 5)
    assert config.retry.budget_s == 3.5
    assert config.metrics.listen == "127.0.0.1:9108"
    sink = config.sinks["out"]
    assert isinstance(sink, FileSinkConfig)
    assert sink.path == Path("/tmp/out.ndjson")
    assert sink.batch.max_records == 2


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"source": {"bogus": 1}}, "source.bogus"),
        ({"batch": {"max_record": 1}}, "batch.max_record"),
        ({"sinks": {"out": {"type": "file", "path": "/x", "bogus": 1}}}, "sinks.out.bogus"),
        (
            {"sinks": {"out": {"type": "file", "path": "/x", "batch": {"linger": 1}}}},
            "sinks.out.batch.linger",
        ),
        (
            {"sinks": {"k": {"type": "kafka", "bootstrap_servers": "a:1", "topic": "t", "ack": 1}}},
            "sinks.k.ack",
        ),
    ],
)
def test_unknown_key_error_names_its_path(raw, key):
    """An unknown key is an error whose message names the key's full path."""
    with pytest.raises(
        ConfigError, match=rf"invalid config: {key}: Extra inputs are not permitted"
    ):
        parse_config(raw)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"sinks": {"k": {"type": "nope"}}}, "sinks.k: Input tag 'nope'"),
        ({"sinks": {"k": {"path": "/x"}}}, "sinks.k: Unable to extract tag"),
        ({"sinks": {"k": {"type": "file"}}}, "sinks.k.path: Field required"),
        ({"sinks": {}}, "sinks: .*at least one sink"),
        ({"sinks": {"a b": {"type": "stdout"}}}, "sink name 'a b'"),
        ({"batch": {"max_records": 0}}, "batch.max_records"),
        ({"source": {"start_at": "middle"}}, "source.start_at"),
        ({"source": {"buffer_records": 3}}, "source.buffer_records"),
        ({"source": {"buffer_bytes": 4096}}, "source.buffer_bytes"),
    ],
)
def test_invalid_values_name_their_key(raw, words):
    """Wrong sink types, missing fields and out-of-range numbers name the key at fault."""
    with pytest.raises(ConfigError, match=words):
        parse_config(raw)


def test_capture_buffer_is_bounded_in_bytes_by_default():
    """Without settings the capture buffer holds 128 MiB of raw records, however many that is."""
    source = parse_config({}).source
    assert source.buffer_bytes == 128 << 20
    assert source.buffer_records is None


@pytest.mark.parametrize(
    ("value", "level"),
    [("emerg", 0), ("err", 3), ("warning", 4), ("debug", 7), (2, 2), ("5", 5)],
)
def test_min_level_accepts_names_and_numbers(value, level):
    """min_level is a syslog level name or 0..7."""
    assert parse_config({"source": {"min_level": value}}).source.min_level == level


@pytest.mark.parametrize("value", ["loud", 8, -1, True, 4.0])
def test_min_level_rejects_others(value):
    """Unknown names, out-of-range numbers, booleans and floats are refused with the key."""
    with pytest.raises(ConfigError, match=r"source\.min_level"):
        parse_config({"source": {"min_level": value}})


@pytest.mark.parametrize("listen", ["9108", ":9108", "localhost", "host:0", "host:65536", "h:x"])
def test_bad_listen_is_refused(listen):
    """metrics.listen must be HOST:PORT with a valid port."""
    with pytest.raises(ConfigError, match=r"metrics\.listen: .*HOST:PORT"):
        parse_config({"metrics": {"listen": listen}})


@pytest.mark.parametrize("listen", ["127.0.0.1:9108", "[::1]:9108", "0.0.0.0:1"])
def test_good_listen_is_accepted(listen):
    """IPv4, bracketed IPv6 and any host with a port 1..65535 are accepted."""
    assert parse_config({"metrics": {"listen": listen}}).metrics.listen == listen


def test_env_references_are_expanded(tmp_path, monkeypatch):
    """${NAME} in any string (nested tables and lists too) is replaced by the variable."""
    monkeypatch.setenv("KF_TEST_BROKER", "broker-1:9092")
    monkeypatch.setenv("KF_TEST_DIR", str(tmp_path))
    path = write_config(
        tmp_path,
        """
state_dir = "${KF_TEST_DIR}/state"
[sinks.k]
type = "kafka"
bootstrap_servers = ["${KF_TEST_BROKER}"]
topic = "kmsg"
""",
    )
    config = load_config(path)
    assert config.state_dir == tmp_path / "state"
    assert isinstance(config.sinks["k"], KafkaSinkConfig)
    assert config.sinks["k"].bootstrap_servers == ["broker-1:9092"]


def test_missing_env_variable_is_an_error_naming_key_and_variable(monkeypatch):
    """A ${NAME} reference to an unset variable fails, naming the key path and the variable."""
    monkeypatch.delenv("KF_TEST_UNSET", raising=False)
    raw = {"sinks": {"out": {"type": "file", "path": "${KF_TEST_UNSET}/out"}}}
    with pytest.raises(ConfigError, match=r"sinks\.out\.path: environment variable KF_TEST_UNSET"):
        parse_config(raw)


def test_dollar_without_braces_is_kept():
    """Only ${NAME} is a reference: a lone '$' or '$NAME' stays as written."""
    config = parse_config({"host": "a$b$HOME"})
    assert config.host == "a$b$HOME"


def test_invalid_toml_is_a_config_error(tmp_path):
    """A file that is not TOML gives ConfigError naming the file and the position."""
    path = write_config(tmp_path, "[source\npath = 1\n")
    with pytest.raises(ConfigError, match=r"forwarder\.toml is not valid TOML: .*line 1"):
        load_config(path)


def test_missing_config_file_is_a_config_error(tmp_path):
    """A config path that does not exist gives ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match=r"cannot read config .*No such file"):
        load_config(tmp_path / "absent.toml")


def test_config_is_frozen():
    """A loaded config cannot be changed by accident."""
    config = parse_config({})
    with pytest.raises(ValueError, match="frozen"):
        config.host = "other"


def _kafka_with_sasl(**sasl):
    """A kafka sink table with these sasl options."""
    return {
        "sinks": {
            "k": {
                "type": "kafka",
                "bootstrap_servers": "b:9092",
                "topic": "t",
                "sasl": {"username": "u", **sasl},
            }
        }
    }


def test_secret_from_file_is_read_and_stripped(tmp_path):
    """A *_file secret is read from its file, without the trailing newline."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    config = parse_config(_kafka_with_sasl(password_file=str(secret)))
    assert config.sinks["k"].sasl.secret == "hunter2"


def test_secret_inline_and_file_together_is_an_error(tmp_path):
    """Giving both password and password_file is refused, naming the table."""
    secret = tmp_path / "pw"
    secret.write_text("x")
    with pytest.raises(
        ConfigError, match=r"sinks\.k\.sasl: .*give password or password_file, not both"
    ):
        parse_config(_kafka_with_sasl(password="y", password_file=str(secret)))


def test_unreadable_secret_file_is_an_error(tmp_path):
    """A *_file that cannot be read is a config error naming the option and the file."""
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError, match=rf"cannot read password_file {missing}: No such file"):
        parse_config(_kafka_with_sasl(password_file=str(missing)))


def test_kernel_events_are_on_by_default_with_every_sink_taking_every_kind():
    """No [kernel_events] table: classification on, no class off, each sink takes all kinds."""
    config = parse_config({})
    assert config.kernel_events.enabled
    assert config.kernel_events.disabled_classes == ()
    assert config.sinks["stdout"].events == ("kmsg", "gap", "kernel_event")
    assert config.sinks["stdout"].kernel_event_classes is None


def _alert_sink(**options):
    return {"type": "file", "path": "/tmp/alerts.ndjson", **options}


def test_a_sink_may_take_only_kernel_events_of_builtin_and_rule_classes():
    """Events and kernel_event_classes accept built-in classes and the user rules' classes."""
    rule = {"class": "nfs_timeout", "regex": r"nfs: server (?P<server>\S+) not responding"}
    config = parse_config(
        {
            "kernel_events": {"rules": [rule]},
            "sinks": {
                "alerts": _alert_sink(
                    events=["kernel_event"], kernel_event_classes=["oom_kill", "nfs_timeout"]
                )
            },
        }
    )
    assert config.sinks["alerts"].kernel_event_classes == ("oom_kill", "nfs_timeout")
    assert config.kernel_events.compiled_rules()[0].class_name == "nfs_timeout"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (
            {"sinks": {"a": _alert_sink(kernel_event_classes=["oom"])}},
            "sinks.a.kernel_event_classes: unknown class 'oom'",
        ),
        (
            {"sinks": {"a": _alert_sink(events=["kmsg"], kernel_event_classes=["oom_kill"])}},
            "kernel_event_classes needs 'kernel_event' in events",
        ),
        ({"sinks": {"a": _alert_sink(events=["alerts"])}}, "sinks.a.events.0"),
        ({"sinks": {"a": _alert_sink(events=[])}}, "events must name at least one"),
        (
            {
                "kernel_events": {"disabled_classes": ["oom_kill"]},
                "sinks": {"a": _alert_sink(kernel_event_classes=["oom_kill"])},
            },
            "'oom_kill' is in kernel_events.disabled_classes",
        ),
        (
            {
                "kernel_events": {"enabled": False},
                "sinks": {"a": _alert_sink(events=["kernel_event"])},
            },
            "sinks.a.events: takes only kernel_event, but [kernel_events] enabled = false",
        ),
        ({"kernel_events": {"disabled_classes": ["oops"]}}, "unknown classes ['oops']"),
        ({"kernel_events": {"idle_flush_s": 0.5}}, "kernel_events.idle_flush_s"),
        (
            {"kernel_events": {"rules": [{"class": "x", "regex": "(unclosed"}]}},
            "kernel_events.rules.0.regex: Value error, invalid regex '(unclosed'",
        ),
        (
            {"kernel_events": {"rules": [{"class": "oom_kill", "regex": "x"}]}},
            "kernel_events.rules.0.class: Value error, class 'oom_kill' is built in",
        ),
        (
            {"kernel_events": {"rules": [{"class": "x", "regex": "x", "facility": "kernel"}]}},
            "kernel_events.rules.0.facility: Value error, unknown facility 'kernel'",
        ),
        (
            {"kernel_events": {"rules": [{"class": "x", "regex": "x", "max_level": "loud"}]}},
            "kernel_events.rules.0.max_level",
        ),
        (
            {"kernel_events": {"rules": [{"class": "x", "regex": "x", "colour": "red"}]}},
            "kernel_events.rules.0.colour",
        ),
    ],
)
def test_kernel_event_options_that_cannot_work_are_refused_naming_the_key(raw, words):
    """Check refuses a selection or rule that could never match, with the key's path."""
    with pytest.raises(ConfigError, match=None) as raised:
        parse_config(raw)
    assert words in str(raised.value)
