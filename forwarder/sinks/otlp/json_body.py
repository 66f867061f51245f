"""OTLP/HTTP JSON, by hand with orjson: the logs request out, the response and Status in.

The proto3 JSON mapping with OTLP's rules (opentelemetry-proto ``docs/specification.md``,
"JSON Protobuf Encoding"; example: ``examples/logs.json``): keys are lowerCamelCase,
enums are integers, 64-bit integers (``timeUnixNano``, ``intValue``) are decimal strings
(Rotel answers 400 to a bare number there), and a receiver ignores unknown keys. Ids
would be hex, not base64, but this sink sends none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from forwarder.sinks.otlp.mapping import LogRecord


class Envelope:
    """The request around the records: one resourceLogs with one scopeLogs."""

    def __init__(
        self, resource: Sequence[tuple[str, Any]], scope_name: str, scope_version: str
    ) -> None:
        self._resource = {"attributes": [key_value(k, v) for k, v in resource]}
        self._scope = {"name": scope_name, "version": scope_version}

    def request(self, records: Sequence[LogRecord]) -> bytes:
        """The JSON ``ExportLogsServiceRequest`` carrying ``records``."""
        scope_logs = {"scope": self._scope, "logRecords": [log_record(r) for r in records]}
        request = {"resourceLogs": [{"resource": self._resource, "scopeLogs": [scope_logs]}]}
        return orjson.dumps(request)


def log_record(record: LogRecord) -> dict[str, Any]:
    """One LogRecord object (defaults left out, as proto3 JSON does)."""
    document: dict[str, Any] = {}
    if record.time_unix_nano:
        document["timeUnixNano"] = str(record.time_unix_nano)
    if record.observed_time_unix_nano:
        document["observedTimeUnixNano"] = str(record.observed_time_unix_nano)
    if record.severity_number:
        document["severityNumber"] = record.severity_number
    if record.severity_text:
        document["severityText"] = record.severity_text
    document["body"] = {"stringValue": record.body}
    # Inlined for the two kinds nearly every attribute is (the hot path); the property
    # tests pin this to the protobuf encoding.
    attributes = []
    for key, value in record.attributes:
        kind = type(value)
        if kind is str:
            attributes.append({"key": key, "value": {"stringValue": value}})
        elif kind is int:
            attributes.append({"key": key, "value": {"intValue": str(value)}})
        else:
            attributes.append(key_value(key, value))
    document["attributes"] = attributes
    if record.event_name:
        document["eventName"] = record.event_name
    return document


def key_value(key: str, value: Any) -> dict[str, Any]:
    """One KeyValue object."""
    return {"key": key, "value": any_value(value)}


def any_value(value: Any) -> dict[str, Any]:  # noqa: PLR0911 - one return per kind
    """One AnyValue object (None: an empty object, no value set)."""
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        # proto3 JSON spells the non-finite doubles as strings.
        return {"doubleValue": value if math.isfinite(value) else _NON_FINITE[str(value)]}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [key_value(k, v) for k, v in value.items()]}}
    if value is None:
        return {}
    raise TypeError(f"no OTLP AnyValue for {type(value).__name__}")


def partial_success(body: bytes) -> tuple[int, str]:
    """``(rejected, error_message)`` of a JSON ``ExportLogsServiceResponse``.

    Decoders accept both the lowerCamelCase and the proto field names, and int64 as a
    string or a number. Raises ValueError when the body is not such a response.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from error
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - bad data, not a bad call
    partial = _member(document, "partialSuccess", "partial_success")
    if partial is None:
        return 0, ""
    if not isinstance(partial, dict):
        raise ValueError("partialSuccess is not an object")  # noqa: TRY004 - bad data
    rejected = _member(partial, "rejectedLogRecords", "rejected_log_records") or 0
    message = _member(partial, "errorMessage", "error_message") or ""
    try:
        return int(rejected), str(message)
    except (TypeError, ValueError) as error:
        raise ValueError(f"rejectedLogRecords {rejected!r}") from error


def status_message(body: bytes) -> str | None:
    """The ``message`` of a JSON ``google.rpc.Status``, or None when the body is not one."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict) and isinstance(message := document.get("message"), str):
        return message
    return None


def _member(document: dict[str, Any], camel: str, snake: str) -> Any:
    return document[camel] if camel in document else document.get(snake)


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
