"""OTLP/HTTP protobuf, by hand: the logs request out, the response and ``google.rpc.Status`` in.

Messages from opentelemetry-proto (https://github.com/open-telemetry/opentelemetry-proto,
``collector/logs/v1/logs_service.proto``, ``logs/v1/logs.proto``, ``common/v1``)::

    ExportLogsServiceRequest { repeated ResourceLogs resource_logs = 1; }
    ResourceLogs  { Resource resource = 1; repeated ScopeLogs scope_logs = 2; }
    Resource      { repeated KeyValue attributes = 1; }
    ScopeLogs     { InstrumentationScope scope = 1; repeated LogRecord log_records = 2; }
    InstrumentationScope { string name = 1; string version = 2; }
    LogRecord     { fixed64 time_unix_nano = 1; SeverityNumber severity_number = 2;
                    string severity_text = 3; AnyValue body = 5;
                    repeated KeyValue attributes = 6; fixed64 observed_time_unix_nano = 11;
                    string event_name = 12; }
    KeyValue      { string key = 1; AnyValue value = 2; }
    AnyValue      { oneof { string string_value = 1; bool bool_value = 2;
                    int64 int_value = 3; double double_value = 4;
                    ArrayValue array_value = 5; KeyValueList kvlist_value = 6; } }
    ArrayValue, KeyValueList { repeated AnyValue|KeyValue values = 1; }
    ExportLogsServiceResponse { ExportLogsPartialSuccess partial_success = 1; }
    ExportLogsPartialSuccess  { int64 rejected_log_records = 1; string error_message = 2; }
    google.rpc.Status { int32 code = 1; string message = 2; repeated Any details = 3; }

Fields are written in field-number order and proto3 defaults are left out, so the bytes
equal what the official runtime writes for the same message (the tests hold us to it).
A oneof member is written even when it is the default (``""``, ``0``, ``false``): that
is how a receiver tells an empty string value from no value. Five small messages of
strings and varints do not justify the protobuf runtime as a dependency; the resource
and scope are encoded once per sink, each record is a few varints and cached keys.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator, Sequence
from typing import Any, Final

from forwarder.sinks.otlp.mapping import LogRecord
from forwarder.sinks.protobuf_wire import ONE_BYTE
from forwarder.sinks.protobuf_wire import varint as _varint

_U64: Final = (1 << 64) - 1
_FIXED64: Final = struct.Struct("<Q")
_DOUBLE: Final = struct.Struct("<d")


class Envelope:
    """The request around the records: one ResourceLogs with one ScopeLogs, encoded once."""

    def __init__(
        self, resource: Sequence[tuple[str, Any]], scope_name: str, scope_version: str
    ) -> None:
        self._resource = _len_field(
            0x0A, b"".join(_len_field(0x0A, key_value(k, v)) for k, v in resource)
        )
        scope = _string_field(0x0A, scope_name) + _string_field(0x12, scope_version)
        self._scope = _len_field(0x0A, scope)

    def request(self, records: Sequence[LogRecord]) -> bytes:
        """The ``ExportLogsServiceRequest`` carrying ``records``."""
        scope_logs = self._scope + b"".join(_len_field(0x12, log_record(r)) for r in records)
        resource_logs = self._resource + _len_field(0x12, scope_logs)
        return _len_field(0x0A, resource_logs)


def log_record(record: LogRecord) -> bytes:
    """One ``LogRecord`` message."""
    parts = []
    if record.time_unix_nano:
        parts.append(b"\x09" + _FIXED64.pack(record.time_unix_nano & _U64))
    if record.severity_number:
        parts.append(b"\x10" + _varint(record.severity_number))
    if record.severity_text:
        parts.append(_string_field(0x1A, record.severity_text))
    parts.append(_len_field(0x2A, any_value(record.body)))
    # Inlined for the two kinds nearly every attribute is (the hot path: ~12 per record);
    # the rest go through key_value. The property tests pin both paths to the runtime.
    small = ONE_BYTE
    for key, value in record.attributes:
        kind = type(value)
        if kind is str:
            encoded = value.encode()
            size = len(encoded)
            any_bytes = b"\x0a" + (small[size] if size < 0x80 else _varint(size)) + encoded
        elif kind is int and 0 <= value < 0x80:
            any_bytes = b"\x18" + small[value]
        elif kind is int:
            any_bytes = b"\x18" + _varint(value & _U64)
        else:
            pair = key_value(key, value)
            parts += (b"\x32", _varint(len(pair)), pair)
            continue
        size = len(any_bytes)
        pair = _key_field(key) + b"\x12" + (small[size] if size < 0x80 else _varint(size))
        size = len(pair) + len(any_bytes)
        parts += (b"\x32", small[size] if size < 0x80 else _varint(size), pair, any_bytes)
    if record.observed_time_unix_nano:
        parts.append(b"\x59" + _FIXED64.pack(record.observed_time_unix_nano & _U64))
    if record.event_name:
        parts.append(_string_field(0x62, record.event_name))
    return b"".join(parts)


def key_value(key: str, value: Any) -> bytes:
    """One ``KeyValue`` message."""
    return _key_field(key) + _len_field(0x12, any_value(value))


def any_value(value: Any) -> bytes:  # noqa: PLR0911 - one return per kind
    """One ``AnyValue`` message (None: no value set)."""
    if isinstance(value, str):
        return _len_field(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & _U64)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, list):
        return _len_field(0x2A, b"".join(_len_field(0x0A, any_value(v)) for v in value))
    if isinstance(value, dict):
        pairs = b"".join(_len_field(0x0A, key_value(k, v)) for k, v in value.items())
        return _len_field(0x32, pairs)
    if value is None:
        return b""
    raise TypeError(f"no OTLP AnyValue for {type(value).__name__}")


def partial_success(body: bytes) -> tuple[int, str]:
    """``(rejected_log_records, error_message)`` of an ``ExportLogsServiceResponse``.

    Raises ValueError when the body is not one.
    """
    rejected, message = 0, ""
    for number, value in _fields(body):
        if number == 1 and isinstance(value, bytes):
            for inner, item in _fields(value):
                if inner == 1 and isinstance(item, int):
                    rejected = item - (1 << 64) if item >> 63 else item
                elif inner == 2 and isinstance(item, bytes):
                    message = item.decode("utf-8", "replace")
    return rejected, message


def status_message(body: bytes) -> str | None:
    """The ``message`` of a ``google.rpc.Status``, or None when the body is not one."""
    try:
        fields = list(_fields(body))
    except ValueError:
        return None
    messages = [value for number, value in fields if number == 2 and isinstance(value, bytes)]
    if not messages:
        return None
    try:
        return messages[-1].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _fields(body: bytes) -> Iterator[tuple[int, int | bytes]]:
    """``(field number, value)`` of each field of one message; ValueError when malformed."""
    position, end = 0, len(body)
    while position < end:
        tag, position = _read_varint(body, position)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire_type == 0:
            value, position = _read_varint(body, position)
            yield number, value
        elif wire_type == 2:
            size, position = _read_varint(body, position)
            if position + size > end:
                raise ValueError("a length beyond the end of the message")
            yield number, body[position : position + size]
            position += size
        elif wire_type in {1, 5}:
            width = 8 if wire_type == 1 else 4
            if position + width > end:
                raise ValueError("a fixed-width field beyond the end of the message")
            yield number, int.from_bytes(body[position : position + width], "little")
            position += width
        else:
            raise ValueError(f"wire type {wire_type}")


def _read_varint(body: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(body) or shift > 63:
            raise ValueError("a truncated or overlong varint")
        byte = body[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _len_field(tag: int, payload: bytes) -> bytes:
    return _TAGS[tag] + _varint(len(payload)) + payload


def _string_field(tag: int, text: str) -> bytes:
    return _len_field(tag, text.encode()) if text else b""


@functools.lru_cache(maxsize=1024)
def _key_field(key: str) -> bytes:
    """Field 1 (``key``) of a KeyValue; attribute names repeat on every record."""
    return _string_field(0x0A, key)


_TAGS: Final = {tag: bytes((tag,)) for tag in (0x0A, 0x12, 0x1A, 0x2A, 0x32, 0x62)}
