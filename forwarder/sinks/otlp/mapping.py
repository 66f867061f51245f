"""Map forwarder events onto the OpenTelemetry log data model (one :class:`LogRecord` each).

Data model: https://github.com/open-telemetry/opentelemetry-specification/blob/main/specification/logs/data-model.md.
A kernel record keeps its message as a string body, its deterministic ``@timestamp`` as
``time_unix_nano``, the syslog level as severity (Appendix B, the table the Collector's
syslog parser uses: ``severity_number >= 17`` means "err or worse" in every backend) and
its kernel fields as ``kmsg.*`` attributes (semantic conventions have no kernel log
namespace, and their naming guide asks for an own prefix). Other events (``gap``,
``kernel_event``) become OTLP events, ``event_name = "kmsg.<kind>"``, their fields
``kmsg.<kind>.<key>`` attributes. The resource names the host, not the boot: the boot id
is a record attribute, so a reboot does not start a new series in backends that index
resource attributes. Both encoders (:mod:`.protobuf`, :mod:`.json_body`) read only this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from forwarder.encoding.reference import Event

SEVERITY_NUMBERS: Final = {
    "emerg": 21,  # FATAL
    "alert": 19,  # ERROR3
    "crit": 18,  # ERROR2
    "err": 17,  # ERROR
    "warning": 13,  # WARN
    "notice": 10,  # INFO2
    "info": 9,  # INFO
    "debug": 5,  # DEBUG
}
NODE_NAME_VARIABLE: Final = "NODE_NAME"  # what the Helm chart sets from the downward API
MACHINE_ID_PATH: Final = Path("/etc/machine-id")
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# (field of a kmsg event, attribute), in the order they are written.
_KMSG_ATTRIBUTES: Final = (
    ("seq", "kmsg.seq"),
    ("boot_id", "kmsg.boot_id"),
    ("facility", "kmsg.facility"),
    ("facility_code", "kmsg.facility_code"),
    ("level_code", "kmsg.level_code"),
    ("flags", "kmsg.flags"),
    ("monotonic_us", "kmsg.monotonic_us"),
    ("caller", "kmsg.caller"),
    ("subsystem", "kmsg.subsystem"),
    ("device", "kmsg.device"),
)
# Envelope keys of other events that map to the record itself, not to attributes.
_ENVELOPE: Final = frozenset({"event", "id", "host", "boot_id", "@timestamp", "level"})


@dataclass(slots=True)  # not frozen: built once per record on the hot path
class LogRecord:
    """The OTLP LogRecord fields this sink sets; attribute values are JSON-like values."""

    time_unix_nano: int
    observed_time_unix_nano: int
    severity_number: int
    severity_text: str
    body: str
    attributes: tuple[tuple[str, Any], ...]
    event_name: str = ""


def log_record(event: Event, observed_ns: int) -> LogRecord:
    """The LogRecord of one event (its JSON decoded once)."""
    fields: dict[str, Any] = orjson.loads(event.json)
    # @timestamp exactly (microseconds): a re-measured clock offset's sub-microsecond
    # noise must not make a re-sent record differ.
    time_ns = event.timestamp_ns - event.timestamp_ns % 1000
    if event.kind == "kmsg":
        level = fields["level"]
        # These fields have fixed types in range (seq and monotonic_us fit int64), so only
        # the dictionary goes through _attribute_value.
        attributes = [("log.record.uid", fields["id"])]
        attributes += [(name, fields[key]) for key, name in _KMSG_ATTRIBUTES if key in fields]
        if "fields" in fields:
            attributes.append(("kmsg.fields", _attribute_value(fields["fields"])))
        return LogRecord(
            time_ns,
            observed_ns,
            SEVERITY_NUMBERS.get(level, 0),
            level,
            fields["message"],
            tuple(attributes),
        )
    kind = fields.get("event", event.kind)
    level = fields.get("level", "warning" if kind == "gap" else "info")
    attributes = [("log.record.uid", fields["id"]), ("kmsg.boot_id", fields["boot_id"])]
    attributes += [
        (f"kmsg.{kind}.{key}", _attribute_value(value))
        for key, value in fields.items()
        if key not in _ENVELOPE and value is not None
    ]
    return LogRecord(
        time_ns,
        observed_ns,
        SEVERITY_NUMBERS.get(level, 0),
        level,
        _event_body(kind, fields),
        tuple(attributes),
        f"kmsg.{kind}",
    )


def resource_attributes(
    *,
    host: str,
    service_name: str,
    extra: Mapping[str, Any],
    environ: Mapping[str, str],
    machine_id_path: Path = MACHINE_ID_PATH,
) -> tuple[tuple[str, Any], ...]:
    """The resource: this host and service; ``extra`` (the config's ``resource``) wins a clash."""
    attributes: dict[str, Any] = {"host.name": host}
    if machine_id := _machine_id(machine_id_path):
        attributes["host.id"] = machine_id
    attributes["os.type"] = "linux"
    attributes["service.name"] = service_name
    if node := environ.get(NODE_NAME_VARIABLE):
        attributes["k8s.node.name"] = node
    attributes.update(extra)
    return tuple((key, _attribute_value(value)) for key, value in attributes.items())


def _attribute_value(value: Any) -> Any:
    """A JSON value as OTLP can carry it: integers beyond int64 become strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else str(value)
    if isinstance(value, dict):
        return {str(key): _attribute_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_attribute_value(item) for item in value]
    return value


def _event_body(kind: str, fields: Mapping[str, Any]) -> str:
    """A line a person reads in a log view; the attributes carry the data."""
    if kind == "gap":
        lost = fields.get("lost")
        count = "an unknown number of" if lost is None else str(lost)
        return f"{count} kernel records lost ({fields.get('reason')})"
    if kind == "kernel_event":
        return f"kernel event {fields.get('class')}"
    return kind


def _machine_id(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return text or None
