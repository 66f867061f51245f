"""Typed, strict configuration loaded from one TOML file (stdlib ``tomllib``).

Unknown keys are errors naming their path (``sinks.kafka.acks``). Every option has a
default, so no file at all means: read /dev/kmsg, print JSON lines on stdout. String
values may reference the environment as ``${NAME}``; secrets also come from ``*_file``
options. Tables are msgspec Structs (``forwarder.options``); each sink table is converted
on its own, so that an error inside it names the sink (msgspec's locations leave dict keys
out), into the type its module declares for its ``type`` tag.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from forwarder.config_errors import FieldError
from forwarder.errors import ConfigError
from forwarder.kernel_events.catalogue import CLASSES
from forwarder.kernel_events.config import KernelEventsConfig
from forwarder.options import (
    BatchConfig,
    Level,
    NonNegativeFloat,
    NonNegativeInt,
    StrictModel,
    check_host_port,
    parse_table,
)
from forwarder.sinks import SinkConfig, StdoutSinkConfig
from forwarder.source.capture_process import DEFAULT_BUFFER_BYTES
from forwarder.spool.config import SpoolConfig

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SINK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class SourceConfig(StrictModel, frozen=True, kw_only=True):
    """``[source]``: where records come from."""

    path: Path = Path("/dev/kmsg")
    boot_id_path: Path = Path("/proc/sys/kernel/random/boot_id")
    start_at: Literal["oldest", "newest"] = "oldest"
    min_level: Level = Level(7)
    buffer_bytes: Annotated[int, msgspec.Meta(ge=1 << 20)] = DEFAULT_BUFFER_BYTES
    buffer_records: Annotated[int, msgspec.Meta(ge=16)] | None = None
    follow: bool = False
    spin_us: NonNegativeInt = 2_000
    capture_priority: Literal["realtime", "normal"] = "realtime"


class RetryConfig(StrictModel, frozen=True, kw_only=True):
    """``[retry]``: capped exponential backoff with full jitter; 0 budget = forever."""

    initial_backoff_ms: Annotated[int, msgspec.Meta(ge=1)] = 500
    max_backoff_ms: Annotated[int, msgspec.Meta(ge=1)] = 60_000
    budget_s: NonNegativeFloat = 0.0


class MetricsConfig(StrictModel, frozen=True, kw_only=True):
    """``[metrics]``: Prometheus and health endpoints; off unless ``listen`` is set."""

    listen: str | None = None
    ready_after_failing_s: NonNegativeFloat = 0.0

    def __post_init__(self) -> None:
        if self.listen is not None:
            try:
                check_host_port(self.listen)
            except ValueError as error:
                raise FieldError("listen", f"{error}, e.g. '127.0.0.1:9108'") from None


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
    expanded: dict[str, Any] = _expand_env(raw, ())
    if isinstance(sinks := expanded.get("sinks"), dict):
        # One at a time: msgspec's error locations would leave the sink's name out.
        expanded["sinks"] = {
            name: parse_table(table, SinkConfig, ("sinks", name))  # type: ignore[arg-type]
            for name, table in sinks.items()
        }
    config = parse_table(expanded, Config)
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


def _default_sinks() -> dict[str, SinkConfig]:
    return {"stdout": StdoutSinkConfig()}


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


class Config(StrictModel, frozen=True, kw_only=True):
    """The whole configuration file."""

    host: str = msgspec.field(default_factory=socket.gethostname)
    state_dir: Path = msgspec.field(default_factory=default_state_dir)
    shutdown_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    source: SourceConfig = SourceConfig()
    batch: BatchConfig = BatchConfig()
    retry: RetryConfig = RetryConfig()
    metrics: MetricsConfig = MetricsConfig()
    spool: SpoolConfig = SpoolConfig()
    kernel_events: KernelEventsConfig = KernelEventsConfig()
    sinks: dict[str, SinkConfig] = msgspec.field(default_factory=_default_sinks)

    def __post_init__(self) -> None:
        for name in self.sinks:
            if not _SINK_NAME.fullmatch(name):
                raise FieldError("sinks", f"sink name {name!r} may use only letters, digits, _ . -")
        if not self.sinks:
            raise FieldError("sinks", "at least one sink is needed")

    @property
    def spool_path(self) -> Path:
        """Where the spool lives: ``[spool] path``, else ``<state_dir>/spool``."""
        return self.spool.path if self.spool.path is not None else self.state_dir / "spool"
