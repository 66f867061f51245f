"""Typed, strict configuration loaded from one TOML file (stdlib ``tomllib``).

Unknown keys are errors naming their path (``sinks.kafka.acks``). Every option has a
default, so no file at all means: read /dev/kmsg, print JSON lines on stdout. String
values may reference the environment as ``${NAME}``; secrets also come from ``*_file``
options. Sink tables are validated by the model each sink module declares.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from forwarder.errors import ConfigError
from forwarder.kernel_events.catalogue import CLASSES
from forwarder.kernel_events.config import KernelEventsConfig
from forwarder.options import BatchConfig, StrictModel
from forwarder.sinks import SinkConfig, StdoutSinkConfig
from forwarder.source.capture_process import DEFAULT_BUFFER_BYTES
from forwarder.source.parser import parse_level
from forwarder.spool.config import SpoolConfig

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SourceConfig(StrictModel):
    """``[source]``: where records come from."""

    path: Path = Path("/dev/kmsg")
    boot_id_path: Path = Path("/proc/sys/kernel/random/boot_id")
    start_at: Literal["oldest", "newest"] = "oldest"
    min_level: int = 7
    buffer_bytes: int = Field(default=DEFAULT_BUFFER_BYTES, ge=1 << 20)
    buffer_records: int | None = Field(default=None, ge=16)
    follow: bool = False
    spin_us: int = Field(default=2_000, ge=0)
    capture_priority: Literal["realtime", "normal"] = "realtime"

    @field_validator("min_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> int:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return parse_level(value)
        raise ValueError("min_level must be a level name (e.g. 'warning') or 0..7")


class RetryConfig(StrictModel):
    """``[retry]``: capped exponential backoff with full jitter; 0 budget = forever."""

    initial_backoff_ms: int = Field(default=500, ge=1)
    max_backoff_ms: int = Field(default=60_000, ge=1)
    budget_s: float = Field(default=0, ge=0)


class MetricsConfig(StrictModel):
    """``[metrics]``: Prometheus and health endpoints; off unless ``listen`` is set."""

    listen: str | None = None
    ready_after_failing_s: float = Field(default=0, ge=0)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("listen must be HOST:PORT, e.g. '127.0.0.1:9108'")
        return value


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/kmsg-forwarder``, else /var/lib/kmsg-forwarder as root."""
    if xdg := os.environ.get("XDG_STATE_HOME"):
        return Path(xdg) / "kmsg-forwarder"
    if os.geteuid() == 0:
        return Path("/var/lib/kmsg-forwarder")
    return Path.home() / ".local" / "state" / "kmsg-forwarder"


def load_config(path: Path | None) -> Config:
    """Read, expand and validate a config file (None: all defaults)."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror}") from error
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config {path} is not valid TOML: {error}") from error
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate an already-parsed config mapping."""
    try:
        config = Config.model_validate(_expand_env(raw, ()))
    except ValidationError as error:
        problems = [f"{_key_path(issue['loc'])}: {issue['msg']}" for issue in error.errors()]
        raise ConfigError("invalid config: " + "; ".join(problems)) from error
    if problems := _event_selection_problems(config):
        raise ConfigError("invalid config: " + "; ".join(problems))
    return config


def _event_selection_problems(config: Config) -> list[str]:
    """What a sink's kernel-event selection asks for that ``[kernel_events]`` never emits."""
    kernel_events = config.kernel_events
    rule_classes = {rule.class_name for rule in kernel_events.rules}
    emitted = (set(CLASSES) - set(kernel_events.disabled_classes)) | rule_classes
    problems = []
    for name, sink in config.sinks.items():
        if "kernel_event" not in sink.events:
            continue
        where = f"sinks.{name}"
        if not kernel_events.enabled and set(sink.events) == {"kernel_event"}:
            problems.append(
                f"{where}.events: takes only kernel_event, but [kernel_events] enabled = false"
            )
        for class_name in sink.kernel_event_classes or ():
            if class_name in kernel_events.disabled_classes:
                problems.append(
                    f"{where}.kernel_event_classes: {class_name!r} is in "
                    "kernel_events.disabled_classes"
                )
            elif class_name not in emitted:
                problems.append(
                    f"{where}.kernel_event_classes: unknown class {class_name!r}: use a built-in "
                    f"class ({', '.join(CLASSES)}) or a [[kernel_events.rules]] class"
                )
    return problems


def _default_sink() -> SinkConfig:
    return StdoutSinkConfig(type="stdout")


def _expand_env(value: Any, where: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {key: _expand_env(item, (*where, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env(item, where) for item in value]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{'.'.join(where)}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REFERENCE.sub(substitute, value)
    return value


def _key_path(location: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in location]
    # A sink table's error carries its type tag after the name: sinks.NAME.kafka.key
    if len(parts) > 2 and parts[0] == "sinks":
        parts = parts[:2] + parts[3:]
    return ".".join(parts) or "(top level)"


class Config(StrictModel):
    """The whole configuration file."""

    host: str = Field(default_factory=socket.gethostname)
    state_dir: Path = Field(default_factory=default_state_dir)
    shutdown_timeout_s: float = Field(default=10, gt=0)
    source: SourceConfig = SourceConfig()
    batch: BatchConfig = BatchConfig()
    retry: RetryConfig = RetryConfig()
    metrics: MetricsConfig = MetricsConfig()
    spool: SpoolConfig = SpoolConfig()
    kernel_events: KernelEventsConfig = KernelEventsConfig()
    sinks: dict[str, SinkConfig] = Field(default_factory=lambda: {"stdout": _default_sink()})

    @field_validator("sinks")
    @classmethod
    def _sink_names(cls, sinks: dict[str, SinkConfig]) -> dict[str, SinkConfig]:
        for name in sinks:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"sink name {name!r} may use only letters, digits, _ . -")
        if not sinks:
            raise ValueError("at least one sink is needed")
        return sinks

    @property
    def spool_path(self) -> Path:
        """Where the spool lives: ``[spool] path``, else ``<state_dir>/spool``."""
        return self.spool.path if self.spool.path is not None else self.state_dir / "spool"
