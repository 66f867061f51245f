"""The otlp sink's mapping and hand-written encoders, decoded by the official opentelemetry-proto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from forwarder.encoding.reference import Event, encode_record, format_timestamp
from forwarder.sinks.otlp import json_body, protobuf
from forwarder.sinks.otlp.mapping import LogRecord, log_record, resource_attributes
from forwarder.source.parser import LEVEL_NAMES, Record, parse_record
from tests.receivers.otlp import STATUS, any_value, key_values
from tests.support.events import gap_event, identity, make_events

RESOURCE = (("host.name", "node-1"), ("service.name", "kernel"))
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
VALUES = st.recursive(
    st.none() | st.booleans() | INT64 | st.text() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def decode(body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
    """Parse with the official classes and require that they write the very same bytes."""
    export = logs_service_pb2.ExportLogsServiceRequest()
    export.ParseFromString(body)
    assert export.SerializeToString() == body
    return export


def decode_json(body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
    """Parse an OTLP JSON request with the official classes (unknown keys refused)."""
    export = logs_service_pb2.ExportLogsServiceRequest()
    json_format.Parse(body, export)
    return export


def both(records: list[LogRecord], resource: Any = RESOURCE) -> tuple[Any, Any]:
    """The request in protobuf and in JSON, both decoded."""
    proto = decode(protobuf.Envelope(resource, "kmsg-forwarder", "1.2").request(records))
    json = decode_json(json_body.Envelope(resource, "kmsg-forwarder", "1.2").request(records))
    return proto, json


def kernel_event(who: Any) -> Event:
    """A kernel_event Event as the kernel-events stage builds one (nested fields, gaps in seqs)."""
    fields = {
        "event": "kernel_event",
        "class": "oom_kill",
        "id": f"{who.boot_id}-900-oom_kill",
        "host": who.host,
        "boot_id": who.boot_id,
        "first_seq": 900,
        "last_seq": 960,
        "record_count": 3,
        "member_seqs": [900, 930, 960],
        "complete": True,
        "@timestamp": "2026-12-01T15:29:53.661239Z",
        "level": "err",
        "fields": {"pid": 22609, "comm": "node", "memcg": {"usage_kb": 4194304}, "cpu": None},
    }
    timestamp_ns = who.clock_offset_ns + 61_000_000_123
    return Event("kernel_event", fields["id"], who.boot_id, 960, timestamp_ns, orjson.dumps(fields))


def test_a_kernel_record_maps_every_field_as_the_issue_says():
    """Body, both times, severity, uid and every kmsg.* attribute of a full record decode as mapped."""
    who = identity()
    record = Record(
        facility_code=0, level_code=4, seq=4242, ts_usec=59_853_793, flags="c",
        message="[tag] IN= OUT=lo é", caller="T123", subsystem="net", device="n2",
        fields={"OTHER_KEY": "value"},
    )  # fmt: skip
    event = encode_record(record, who)
    proto, json = both([log_record(event, 1_800_000_000_000_000_001)])
    assert proto == json
    (logged,) = proto.resource_logs[0].scope_logs[0].log_records
    assert logged.body.string_value == "[tag] IN= OUT=lo é"
    assert logged.time_unix_nano == who.clock_offset_ns // 1000 * 1000 + 59_853_793_000
    assert logged.observed_time_unix_nano == 1_800_000_000_000_000_001
    assert (logged.severity_number, logged.severity_text) == (13, "warning")
    assert logged.event_name == ""
    assert key_values(logged.attributes) == {
        "log.record.uid": f"{who.boot_id}-4242",
        "kmsg.seq": 4242,
        "kmsg.boot_id": who.boot_id,
        "kmsg.facility": "kern",
        "kmsg.facility_code": 0,
        "kmsg.level_code": 4,
        "kmsg.flags": "c",
        "kmsg.monotonic_us": 59_853_793,
        "kmsg.caller": "T123",
        "kmsg.subsystem": "net",
        "kmsg.device": "n2",
        "kmsg.fields": {"OTHER_KEY": "value"},
    }
    assert [kv.key for kv in logged.attributes][:2] == ["log.record.uid", "kmsg.seq"]
    assert logged.attributes[1].value.WhichOneof("value") == "int_value"


def test_time_is_the_events_timestamp_to_the_microsecond():
    """time_unix_nano is exactly @timestamp (microseconds), so a re-measured offset changes nothing."""
    event = make_events(["x"])[0]
    event.timestamp_ns = event.timestamp_ns // 1000 * 1000 + 789  # a sub-microsecond offset
    logged = log_record(event, 1)
    assert logged.time_unix_nano == event.timestamp_ns - 789
    assert format_timestamp(logged.time_unix_nano) == event.fields["@timestamp"]


@pytest.mark.parametrize(
    ("level_code", "number"), [(0, 21), (1, 19), (2, 18), (3, 17), (4, 13), (5, 10), (6, 9), (7, 5)]
)
def test_severity_follows_the_syslog_table(level_code, number):
    """Each syslog level gets the spec's Appendix B number and its own name as text."""
    (logged,) = [log_record(e, 1) for e in make_events(["x"], level_code=level_code)]
    assert (logged.severity_number, logged.severity_text) == (number, LEVEL_NAMES[level_code])


def test_a_gap_is_an_otlp_event_with_its_fields_as_attributes():
    """A gap becomes event kmsg.gap: warning, a readable body, kmsg.gap.* attributes."""
    who = identity()
    proto, json = both([log_record(gap_event(who, 5, 9), 7)])
    assert proto == json
    (logged,) = proto.resource_logs[0].scope_logs[0].log_records
    assert logged.event_name == "kmsg.gap"
    assert (logged.severity_number, logged.severity_text) == (13, "warning")
    assert logged.body.string_value == "5 kernel records lost (overwritten)"
    assert key_values(logged.attributes) == {
        "log.record.uid": f"{who.boot_id}-gap-5",
        "kmsg.boot_id": who.boot_id,
        "kmsg.gap.first_seq": 5,
        "kmsg.gap.last_seq": 9,
        "kmsg.gap.lost": 5,
        "kmsg.gap.reason": "overwritten",
    }


def test_a_reboot_gap_leaves_out_what_is_unknowable():
    """A gap whose end is unknown has no last_seq and no lost attribute, and says so in its body."""
    who = identity()
    event = gap_event(who, 5, 9)
    fields = event.fields | {"last_seq": None, "lost": None, "reason": "reboot"}
    event.json = orjson.dumps(fields)
    logged = log_record(event, 7)
    assert dict(logged.attributes).keys() == {
        "log.record.uid", "kmsg.boot_id", "kmsg.gap.first_seq", "kmsg.gap.reason"
    }  # fmt: skip
    assert logged.body == "an unknown number of kernel records lost (reboot)"


def test_a_kernel_event_is_an_otlp_event_with_nested_fields_as_kvlists():
    """A kernel_event becomes event kmsg.kernel_event; its fields map is a kvlist, seqs an array."""
    who = identity()
    proto, json = both([log_record(kernel_event(who), 7)])
    assert proto == json
    (logged,) = proto.resource_logs[0].scope_logs[0].log_records
    assert logged.event_name == "kmsg.kernel_event"
    assert (logged.severity_number, logged.severity_text) == (17, "err")
    assert logged.body.string_value == "kernel event oom_kill"
    attributes = key_values(logged.attributes)
    assert attributes["kmsg.kernel_event.class"] == "oom_kill"
    assert attributes["kmsg.kernel_event.member_seqs"] == [900, 930, 960]
    assert attributes["kmsg.kernel_event.complete"] is True
    assert attributes["kmsg.kernel_event.fields"] == {
        "pid": 22609, "comm": "node", "memcg": {"usage_kb": 4194304}, "cpu": None
    }  # fmt: skip
    fields = {kv.key: kv.value for kv in logged.attributes}["kmsg.kernel_event.fields"]
    assert fields.WhichOneof("value") == "kvlist_value"


def test_the_resource_names_host_machine_node_and_service(tmp_path: Path):
    """host.name, host.id from the machine id, os.type, service.name, k8s.node.name, then extras."""
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    resource = resource_attributes(
        host="node-1",
        service_name="kernel",
        extra={"deployment.environment.name": "prod", "rack": 7},
        environ={"NODE_NAME": "k8s-node-1"},
        machine_id_path=machine_id,
    )
    proto, json = both([log_record(make_events(["x"])[0], 1)], resource)
    assert proto == json
    assert key_values(proto.resource_logs[0].resource.attributes) == {
        "host.name": "node-1",
        "host.id": "0123456789abcdef0123456789abcdef",
        "os.type": "linux",
        "service.name": "kernel",
        "k8s.node.name": "k8s-node-1",
        "deployment.environment.name": "prod",
        "rack": 7,
    }
    scope = proto.resource_logs[0].scope_logs[0].scope
    assert (scope.name, scope.version) == ("kmsg-forwarder", "1.2")


def test_no_machine_id_and_no_node_name_leave_their_attributes_out(tmp_path: Path):
    """An unreadable machine id and an unset NODE_NAME add nothing; an extra may rename the host."""
    resource = resource_attributes(
        host="node-1", service_name="svc", extra={"host.name": "node-1.example"},
        environ={}, machine_id_path=tmp_path / "absent",
    )  # fmt: skip
    assert dict(resource) == {
        "host.name": "node-1.example",
        "os.type": "linux",
        "service.name": "svc",
    }


def test_integers_beyond_int64_travel_as_strings():
    """A value no int64 holds keeps its digits as a string instead of wrapping around."""
    event = make_events(["x"])[0]
    event.json = orjson.dumps(event.fields | {"fields": {"HUGE": 2**64 - 1, "MAX": 2**63 - 1}})
    proto, json = both([log_record(event, 1)])
    assert proto == json
    values = key_values(proto.resource_logs[0].scope_logs[0].log_records[0].attributes)
    assert values["kmsg.fields"] == {"HUGE": str(2**64 - 1), "MAX": 2**63 - 1}


@given(body=st.text(), attributes=st.dictionaries(st.text(), VALUES, max_size=6))
def test_any_body_and_attributes_round_trip_through_both_encodings(body, attributes):
    """Unicode, empty strings, int64 extremes, doubles, nested lists and maps decode as they were sent."""
    record = LogRecord(2**64 - 1, 0, 0, "", body, tuple(attributes.items()), "")
    proto, json = both([record, record])
    assert proto == json
    for logged in proto.resource_logs[0].scope_logs[0].log_records:
        assert logged.body.WhichOneof("value") == "string_value"
        assert logged.body.string_value == body
        assert logged.time_unix_nano == 2**64 - 1
        assert key_values(logged.attributes) == attributes


@given(message=st.binary(max_size=300).filter(lambda raw: b"\n" not in raw))
def test_any_kernel_message_bytes_give_a_request_the_official_runtime_decodes(message):
    """Whatever bytes a record's text holds, the request decodes and the body is the parsed message."""
    record = parse_record(b"6,1,100,-;" + message + b"\n")
    event = encode_record(record, identity())
    proto = decode(protobuf.Envelope(RESOURCE, "s", "v").request([log_record(event, 1)]))
    assert proto.resource_logs[0].scope_logs[0].log_records[0].body.string_value == record.message


@given(value=VALUES)
def test_any_value_matches_the_official_encoding(value):
    """One AnyValue, encoded by hand, parses to the value and re-encodes byte for byte."""
    parsed = protobuf.any_value(value)
    message = logs_service_pb2.ExportLogsServiceRequest()  # any message with AnyValue inside
    message.resource_logs.add().resource.attributes.add(key="k").value.ParseFromString(parsed)
    decoded = message.resource_logs[0].resource.attributes[0].value
    assert decoded.SerializeToString() == parsed
    assert any_value(decoded) == value


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (ExportLogsServiceResponse(), (0, "")),
        (ExportLogsServiceResponse(partial_success={}), (0, "")),
        (ExportLogsServiceResponse(partial_success={"error_message": "warn"}), (0, "warn")),
        (
            ExportLogsServiceResponse(
                partial_success={"rejected_log_records": 3, "error_message": "too old"}
            ),
            (3, "too old"),
        ),
    ],
    ids=["empty", "empty-partial", "warning", "rejected"],
)
def test_responses_decode_in_both_encodings(response, expected):
    """A response written by the official classes reads the same from protobuf and from JSON."""
    assert protobuf.partial_success(response.SerializeToString()) == expected
    text = json_format.MessageToJson(response, use_integers_for_enums=True).encode()
    assert json_body.partial_success(text) == expected


def test_json_responses_as_receivers_write_them():
    """Rotel's null partialSuccess, snake_case names and int64 numbers are all read."""
    assert json_body.partial_success(b'{"partialSuccess":null}') == (0, "")
    assert json_body.partial_success(b"{}") == (0, "")
    snake = b'{"partial_success":{"rejected_log_records":2,"error_message":"x"}}'
    assert json_body.partial_success(snake) == (2, "x")


@pytest.mark.parametrize("body", [b"\xff\xff", b"\x0a\x05ab", b"\x08"], ids=["tag", "short", "eof"])
def test_a_malformed_protobuf_response_is_an_error_not_a_guess(body):
    """Bytes that are no protobuf message raise ValueError (the sink then logs and counts them)."""
    with pytest.raises(ValueError):
        protobuf.partial_success(body)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"partialSuccess": 3}'])
def test_a_malformed_json_response_is_an_error(body):
    """JSON that is no ExportLogsServiceResponse raises ValueError."""
    with pytest.raises(ValueError):
        json_body.partial_success(body)


def test_status_bodies_give_their_message_and_anything_else_none():
    """google.rpc.Status in protobuf or JSON gives its message; plain text or nothing gives None."""
    status = STATUS(code=3, message="bad timestamp")
    assert protobuf.status_message(status.SerializeToString()) == "bad timestamp"
    assert json_body.status_message(json_format.MessageToJson(status).encode()) == "bad timestamp"
    assert protobuf.status_message(b"") is None
    assert protobuf.status_message(b"\xff\xff") is None
    assert json_body.status_message(b"Bad Request") is None
    assert json_body.status_message(b'{"code": 3}') is None
