"""A strict OTLP/HTTP logs receiver, written from the specification.

https://github.com/open-telemetry/opentelemetry-proto/blob/main/docs/specification.md:
``POST /v1/logs``, ``application/x-protobuf`` or ``application/json`` (optionally gzip),
an ``ExportLogsServiceRequest`` decoded with the official ``opentelemetry-proto`` classes.
Protobuf must re-encode to the same bytes (canonical field order, no stray defaults); JSON
must follow OTLP's rules (lowerCamelCase keys, integer enums, int64 as decimal strings).
The answer has the request's content type. It can refuse a whole request with a 400 and
a ``google.rpc.Status``, or store part of it and answer a partial success.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.receivers.base import ApiViolationError, Receiver, require

LOGS_PATH = "/v1/logs"
_INT64_KEYS = frozenset({"timeUnixNano", "observedTimeUnixNano", "intValue"})
_CAMEL = re.compile(r"[a-z][a-zA-Z0-9]*")


@dataclass(frozen=True)
class StoredLog:
    """One log record as the receiver stored it, with its envelope."""

    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    record: LogRecord

    @property
    def body(self) -> str:
        """The string body."""
        return self.record.body.string_value

    @property
    def attributes(self) -> dict[str, Any]:
        """The record's attributes as Python values."""
        return key_values(self.record.attributes)


class OtlpReceiver(Receiver):
    """Validates export requests and stores their records by ``log.record.uid``."""

    def __init__(self, *, path: str = LOGS_PATH, canonical: bool = True, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.canonical = canonical
        self.refuse_bodies_containing: set[str] = set()
        self.reject_bodies_containing: set[str] = set()
        self.stored: dict[str, StoredLog] = {}
        self.arrivals: list[StoredLog] = []
        self.sent_bodies: Counter[str] = Counter()  # every record received, stored or not
        self.duplicates = 0
        self.content_types: list[str] = []
        self.content_encodings: list[str | None] = []

    def logs(self, containing: str = "") -> list[StoredLog]:
        """Stored records whose body contains ``containing``, in arrival order."""
        return [log for log in self.stored.values() if containing in log.body]

    def handle(self, request: web.Request, body: bytes) -> web.Response:
        """Validate one export; store it, part of it, or refuse it."""
        require(request.method == "POST", f"method {request.method}, want POST")
        require(request.path == self.path, f"path {request.path}, want {self.path}")
        content_type = request.headers.get("Content-Type", "")
        self.content_types.append(content_type)
        self.content_encodings.append(request.headers.get("Content-Encoding"))
        if content_type == "application/x-protobuf":
            export = self._protobuf(body)
        elif content_type == "application/json":
            export = _json(body)
        else:
            raise ApiViolationError(f"Content-Type {content_type!r}")
        logs = _logs(export)
        require(bool(logs), "an export without log records (empty envelope)")
        self.sent_bodies.update(log.body for log in logs)
        json = content_type == "application/json"
        refused = [log for log in logs if _contains(log.body, self.refuse_bodies_containing)]
        if refused:
            message = f"invalid record: {refused[0].body}"
            return _status_reply(400, message, json=json)
        rejected = [log for log in logs if _contains(log.body, self.reject_bodies_containing)]
        for log in logs:
            if log not in rejected:
                self._store(log)
        response = logs_service_pb2.ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = len(rejected)
            response.partial_success.error_message = f"{len(rejected)} records over a limit"
        if json:
            text = json_format.MessageToJson(response, use_integers_for_enums=True)
            return web.Response(status=200, body=text.encode(), content_type="application/json")
        return web.Response(
            status=200, body=response.SerializeToString(), content_type="application/x-protobuf"
        )

    def _protobuf(self, body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
        export = logs_service_pb2.ExportLogsServiceRequest()
        try:
            export.ParseFromString(body)
        except DecodeError as error:
            raise ApiViolationError(f"body is not an ExportLogsServiceRequest: {error}") from error
        if self.canonical:
            export.DiscardUnknownFields()
            require(export.SerializeToString() == body, "request does not re-encode to its bytes")
        return export

    def _store(self, log: StoredLog) -> None:
        uid = log.attributes.get("log.record.uid")
        require(isinstance(uid, str) and bool(uid), "a record without log.record.uid")
        assert isinstance(uid, str)
        self.duplicates += uid in self.stored
        self.stored[uid] = log
        self.arrivals.append(log)


def any_value(value: AnyValue) -> Any:
    """An AnyValue as a Python value (None when unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return key_values(value.kvlist_value.values)
    if kind == "bytes_value":
        return bytes(value.bytes_value)
    return getattr(value, kind)


def key_values(pairs: Any) -> dict[str, Any]:
    """Repeated KeyValue as a dict; a repeated key breaks the data model."""
    result = {pair.key: any_value(pair.value) for pair in pairs}
    require(len(result) == len(pairs), "attribute keys must be unique")
    return result


def _logs(export: logs_service_pb2.ExportLogsServiceRequest) -> list[StoredLog]:
    logs = []
    for resource_logs in export.resource_logs:
        resource = key_values(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            logs += [
                StoredLog(resource, scope.name, scope.version, record)
                for record in scope_logs.log_records
            ]
    return logs


def _json(body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiViolationError(f"body is not JSON: {error}") from error
    _check_json(document, "")
    export = logs_service_pb2.ExportLogsServiceRequest()
    try:
        json_format.ParseDict(document, export)
    except json_format.ParseError as error:
        raise ApiViolationError(f"not an ExportLogsServiceRequest: {error}") from error
    return export


def _check_json(value: Any, path: str) -> None:
    """OTLP's JSON rules, which the proto3 parser alone would let pass."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        where = f"{path}.{key}"
        # Attribute keys are data; every other key is a field name.
        require(bool(_CAMEL.fullmatch(key)), f"{where}: keys must be lowerCamelCase")
        if key in _INT64_KEYS:
            require(isinstance(item, str) and item.lstrip("-").isdigit(), f"{where}: int64 string")
        if key == "severityNumber":
            require(type(item) is int, f"{where}: enums are integers")
        if key != "key":
            _check_json(item, where)


def _status_reply(status: int, message: str, *, json: bool) -> web.Response:
    error = STATUS(code=3, message=message)
    if json:
        text = json_format.MessageToJson(error)
        return web.Response(status=status, body=text.encode(), content_type="application/json")
    return web.Response(
        status=status, body=error.SerializeToString(), content_type="application/x-protobuf"
    )


def _contains(text: str, markers: set[str]) -> bool:
    return any(marker in text for marker in markers)


def _status_class() -> Any:
    """``google.rpc.Status`` from its .proto definition (googleapis' protos are no dependency)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/status.proto", package="google.rpc", syntax="proto3"
    )
    proto.dependency.append("google/protobuf/any.proto")
    kinds = descriptor_pb2.FieldDescriptorProto
    status = proto.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=kinds.TYPE_INT32, label=kinds.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=kinds.TYPE_STRING, label=kinds.LABEL_OPTIONAL)
    status.field.add(
        name="details",
        number=3,
        type=kinds.TYPE_MESSAGE,
        label=kinds.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


STATUS = _status_class()
