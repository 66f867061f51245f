"""A strict Loki push receiver, written from the documented API.

https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs: ``POST
/loki/api/v1/push``, JSON (optionally gzip) or snappy-compressed protobuf PushRequest.
Protobuf bodies are decoded with the official protobuf runtime from a descriptor built
here, independently of the sink's hand-written encoder. Stores entries the way Loki
deduplicates them (labels, timestamp, line) and can answer Loki's partial 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cramjam
import orjson
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from tests.receivers.base import ApiViolationError, Receiver, require

PUSH_PATH = "/loki/api/v1/push"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
LabelSet = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StoredEntry:
    """One entry Loki would have stored."""

    labels: dict[str, str]
    timestamp_ns: int
    line: str
    metadata: dict[str, str]


class LokiReceiver(Receiver):
    """Validates pushes, stores entries, can ignore chosen lines with a Loki-shaped 400."""

    def __init__(
        self,
        *,
        tenant_id: str | None = None,
        authorization: str | None = None,
        max_body_bytes: int | None = None,
        max_returned_errors: int = 10,
    ) -> None:
        super().__init__(authorization=authorization, max_body_bytes=max_body_bytes)
        self.tenant_id = tenant_id
        self.max_returned_errors = max_returned_errors
        self.ignore_lines_containing: set[str] = set()
        self.stored: dict[tuple[LabelSet, int, str], StoredEntry] = {}
        self.duplicates = 0
        self.content_types: list[str] = []

    def entries(self, containing: str = "") -> list[StoredEntry]:
        """Stored entries whose line contains ``containing``, by timestamp."""
        found = [entry for entry in self.stored.values() if containing in entry.line]
        return sorted(found, key=lambda entry: entry.timestamp_ns)

    def handle(self, request: web.Request, body: bytes) -> web.Response:
        """Validate one push; store it, or store part of it and answer 400."""
        require(request.method == "POST", f"method {request.method}, want POST")
        require(request.path == PUSH_PATH, f"path {request.path}, want {PUSH_PATH}")
        if self.tenant_id is not None and request.headers.get("X-Scope-OrgID") != self.tenant_id:
            return web.Response(status=401, text="no org id")
        content_type = request.headers.get("Content-Type", "")
        self.content_types.append(content_type)
        if content_type == "application/json":
            streams = _json_streams(body)
        elif content_type == "application/x-protobuf":
            require("Content-Encoding" not in request.headers, "protobuf bodies are raw snappy")
            streams = decode_protobuf_push(body)
        else:
            raise ApiViolationError(f"Content-Type {content_type!r}")
        require(bool(streams), "no streams")
        errors = []
        for labels, values in streams:
            _check_stream(labels, values)
            ignored = []
            for timestamp_ns, line, metadata in values:
                if any(marker in line for marker in self.ignore_lines_containing):
                    ignored.append(timestamp_ns)
                    continue
                key = (tuple(sorted(labels.items())), timestamp_ns, line)
                self.duplicates += key in self.stored
                self.stored[key] = StoredEntry(labels, timestamp_ns, line, metadata)
            if ignored:
                errors.append(
                    _ingester_error(labels, ignored, len(values), self.max_returned_errors)
                )
        if errors:
            return web.Response(status=400, text="; ".join(errors))
        return web.Response(status=204)


def _check_stream(labels: dict[str, str], values: list[tuple[int, str, dict[str, str]]]) -> None:
    require(1 <= len(labels) <= 15, f"{len(labels)} labels, want 1..15")
    for name, value in labels.items():
        require(bool(_LABEL_NAME.fullmatch(name)), f"label name {name!r}")
        require(not name.startswith("__"), f"reserved label name {name!r}")
        require(len(name.encode()) <= 1024, "label name over 1024 bytes")
        require(0 < len(value.encode()) <= 2048, f"label {name} value of bad size")
    require(bool(values), "a stream without values")
    previous = -1
    for timestamp_ns, line, metadata in values:
        require(timestamp_ns >= previous, "entries of a stream not in timestamp order")
        previous = timestamp_ns
        require(len(line.encode()) <= 256 * 1024, "line over 256 KiB")
        require(len(metadata) <= 128, "over 128 structured metadata entries")


def _json_streams(
    body: bytes,
) -> list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]]:
    try:
        push = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiViolationError(f"body is not JSON: {error}") from error
    require(isinstance(push, dict) and set(push) == {"streams"}, "top level must be {streams}")
    require(isinstance(push["streams"], list), "streams must be a list")
    streams = []
    for stream in push["streams"]:
        require(isinstance(stream, dict) and set(stream) == {"stream", "values"}, "stream keys")
        labels = stream["stream"]
        require(_is_flat_strings(labels), "stream labels must map strings to strings")
        values = []
        for value in stream["values"]:
            require(isinstance(value, list) and len(value) in {2, 3}, f"value {value!r}")
            timestamp, line = value[0], value[1]
            require(
                isinstance(timestamp, str) and timestamp.isdigit(),
                "timestamp must be a string of ns",
            )
            require(isinstance(line, str), "line must be a string")
            metadata = value[2] if len(value) == 3 else {}
            require(_is_flat_strings(metadata), "structured metadata must be flat strings")
            values.append((int(timestamp), line, metadata))
        streams.append((labels, values))
    return streams


def decode_protobuf_push(
    body: bytes,
) -> list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]]:
    """Decode and check a snappy-compressed PushRequest: (labels, [(ns, line, metadata)])."""
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception as error:
        raise ApiViolationError(f"body is not raw snappy: {error}") from error
    push = _PUSH_REQUEST()
    try:
        push.ParseFromString(raw)
    except Exception as error:
        raise ApiViolationError(f"body is not a PushRequest: {error}") from error
    # Without its unknown fields, re-encoding gives the same bytes only if there were none.
    push.DiscardUnknownFields()
    require(push.SerializeToString() == raw, "PushRequest does not re-encode to the same bytes")
    streams = []
    for stream in push.streams:
        labels_text = stream.labels
        pairs = _LABEL_PAIR.findall(labels_text)
        rebuilt = "{" + ", ".join(f'{name}="{value}"' for name, value in pairs) + "}"
        require(rebuilt == labels_text, f"labels {labels_text!r} not in Prometheus syntax")
        labels = {name: orjson.loads(f'"{value}"') for name, value in pairs}
        values = [
            (
                entry.timestamp.seconds * 1_000_000_000 + entry.timestamp.nanos,
                entry.line,
                {pair.name: pair.value for pair in entry.structuredMetadata},
            )
            for entry in stream.entries
        ]
        streams.append((labels, values))
    return streams


def _is_flat_strings(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    )


def _ingester_error(labels: dict[str, str], ignored: list[int], total: int, limit: int) -> str:
    """Loki's ingester text for ignored entries of one stream (max_returned_errors cut)."""
    lines = [
        f"entry with timestamp {go_time(timestamp_ns)} ignored, reason: "
        f"'entry too far behind, entry timestamp is: {go_time(timestamp_ns)}',\n"
        for timestamp_ns in ignored[:limit]
    ]
    stream = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return (
        "".join(lines)
        + f"user 'fake', total ignored: {len(ignored)} out of {total} for stream: {stream}"
    )


def go_time(timestamp_ns: int) -> str:
    """Go's ``time.Time.String()`` of a UTC time, e.g. ``2024-05-01 10:00:00.5 +0000 UTC``."""
    seconds, nanos = divmod(timestamp_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{moment:%Y-%m-%d %H:%M:%S}{fraction} +0000 UTC"


def _push_request_class() -> Any:
    """Build logproto.PushRequest from its .proto definition, without protoc."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="push.proto", package="logproto", syntax="proto3"
    )
    proto.dependency.append("google/protobuf/timestamp.proto")
    string, message, int_ = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    )
    optional, repeated = (
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    shapes = {
        "PushRequest": [("streams", 1, message, repeated, ".logproto.StreamAdapter")],
        "StreamAdapter": [
            ("labels", 1, string, optional, None),
            ("entries", 2, message, repeated, ".logproto.EntryAdapter"),
            ("hash", 3, int_, optional, None),
        ],
        "EntryAdapter": [
            ("timestamp", 1, message, optional, ".google.protobuf.Timestamp"),
            ("line", 2, string, optional, None),
            ("structuredMetadata", 3, message, repeated, ".logproto.LabelPairAdapter"),
        ],
        "LabelPairAdapter": [
            ("name", 1, string, optional, None),
            ("value", 2, string, optional, None),
        ],
    }
    for name, fields in shapes.items():
        described = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            added = described.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


_PUSH_REQUEST = _push_request_class()
