"""The otlp sink against a strict loopback OTLP receiver, and what each answer means."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from multidict import CIMultiDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from forwarder.config import parse_config
from forwarder.errors import ConfigError
from forwarder.sinks.base import Batch, outcome_of
from forwarder.sinks.http.client import HttpReply
from forwarder.sinks.otlp.config import OtlpSinkConfig
from forwarder.sinks.otlp.sink import OtlpSink
from forwarder.sinks.outcome import Outcome, Rejection, Verdict
from tests.receivers.base import Reply
from tests.receivers.otlp import STATUS, OtlpReceiver
from tests.support.events import make_events
from tests.support.forwarder import free_port

ENCODINGS = [
    {},
    {"compression": "none"},
    {"encoding": "json"},
    {"encoding": "json", "compression": "none"},
]
ENCODING_IDS = ["protobuf-gzip", "protobuf", "json-gzip", "json"]


def otlp_config(url: str, **options: Any) -> OtlpSinkConfig:
    """An otlp sink table pointing at ``url``."""
    return OtlpSinkConfig.model_validate({"type": "otlp", "endpoint": url, **options})


def make_sink(config: OtlpSinkConfig, tmp_path: Path | None = None, **kwargs: Any) -> OtlpSink:
    """A sink with a fixed clock, no machine id and no node name unless asked."""
    missing = (tmp_path or Path("/nonexistent")) / "machine-id"
    defaults: dict[str, Any] = {"clock_ns": lambda: 1_000, "environ": {}}
    defaults["machine_id_path"] = missing
    return OtlpSink("otlp", config, host="node-1", **(defaults | kwargs))


async def send(config: OtlpSinkConfig, events: list[Any], **kwargs: Any) -> Outcome:
    """Send one batch through a fresh sink; its Outcome (no answer classified as the worker does)."""
    sink = make_sink(config, **kwargs)
    await sink.start()
    try:
        return await outcome_of(sink, sink.send(Batch(events)))
    finally:
        await sink.close()


def reply(status: int, body: bytes = b"", **headers: str) -> HttpReply:
    """An HTTP answer as the client reads it."""
    return HttpReply(
        status, CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}), body
    )


def answer(status: int, body: bytes = b"", *, records: int = 4, **options: Any) -> Outcome:
    """What the sink makes of one answer to a request of ``records`` records."""
    headers = options.pop("headers", {})
    sink = make_sink(otlp_config("http://127.0.0.1:9", **options))
    return sink.answer(reply(status, body, **headers), records)


@pytest.mark.parametrize("options", ENCODINGS, ids=ENCODING_IDS)
async def test_every_record_arrives_in_each_encoding(options):
    """Protobuf and JSON, gzip or not, deliver every record to /v1/logs in order with its body."""
    events = make_events([f"line {i}" for i in range(30)])
    async with OtlpReceiver() as receiver:
        assert await send(otlp_config(receiver.url, **options), events) == Outcome.delivered()
        stored = receiver.logs("line ")
        encoding = receiver.content_encodings
    assert [log.body for log in stored] == [f"line {i}" for i in range(30)]
    assert [log.attributes["log.record.uid"] for log in stored] == [e.id for e in events]
    assert {log.record.observed_time_unix_nano for log in stored} == {1_000}
    assert stored[0].resource == {
        "host.name": "node-1", "os.type": "linux", "service.name": "kernel"
    }  # fmt: skip
    assert encoding == ["gzip" if options.get("compression") != "none" else None]


async def test_an_endpoint_with_a_path_is_used_as_it_is():
    """An endpoint with a path (Loki's /otlp/v1/logs) is posted to unchanged."""
    async with OtlpReceiver(path="/otlp/v1/logs") as receiver:
        outcome = await send(otlp_config(f"{receiver.url}/otlp/v1/logs"), make_events(["x"]))
        assert outcome == Outcome.delivered()
    assert otlp_config("https://collector:4318").logs_url().path == "/v1/logs"
    assert otlp_config("https://collector:4318/").logs_url().path == "/v1/logs"


async def test_headers_auth_service_and_resource_options_reach_the_receiver(tmp_path: Path):
    """Bearer auth, custom headers, service_name, resource extras and NODE_NAME all arrive."""
    (tmp_path / "machine-id").write_text("abc123\n")
    async with OtlpReceiver(authorization="Bearer s3cret") as receiver:
        config = otlp_config(
            receiver.url,
            bearer_token="s3cret",
            headers={"X-Tenant": "blue"},
            service_name="kmsg",
            resource={"deployment.environment.name": "prod", "rack": 4},
        )
        outcome = await send(
            config, make_events(["x"]), environ={"NODE_NAME": "n1"},
            machine_id_path=tmp_path / "machine-id",
        )  # fmt: skip
        assert outcome == Outcome.delivered()
        (log,) = receiver.logs()
        headers = receiver.requests[0].headers
    assert headers["X-Tenant"] == "blue"
    assert log.resource == {
        "host.name": "node-1",
        "host.id": "abc123",
        "os.type": "linux",
        "service.name": "kmsg",
        "k8s.node.name": "n1",
        "deployment.environment.name": "prod",
        "rack": 4,
    }


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_a_partial_success_dead_letters_the_whole_batch_with_count_and_message(encoding):
    """A partial success rejecting k > 0 is never retried: all n records come back rejected, saying k of n and why."""
    events = make_events(["ok 1", "bad 2", "ok 3"])
    async with OtlpReceiver() as receiver:
        receiver.reject_bodies_containing.add("bad")
        outcome = await send(otlp_config(receiver.url, encoding=encoding), events)
        assert len(receiver.requests) == 1
    detail = "1 of 3 rejected: 1 records over a limit"
    assert outcome == Outcome.answered(
        rejected=[Rejection(i, "otlp_partial", detail) for i in range(3)]
    )


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_a_400_with_a_status_body_splits_then_names_the_refused_record(encoding):
    """A 400 on n > 1 records asks for a split; on one record it is refused with Status.message."""
    async with OtlpReceiver() as receiver:
        receiver.refuse_bodies_containing.add("bad")
        config = otlp_config(receiver.url, encoding=encoding)
        several = await send(config, make_events(["ok", "bad"]))
        single = await send(config, make_events(["bad"]))
    assert several.verdict is Verdict.SPLIT
    assert "HTTP 400: invalid record: bad" in several.detail
    (rejection,) = single.rejected
    assert (rejection.index, rejection.reason) == (0, "otlp_400")
    assert rejection.detail == "OTLP otlp: HTTP 400: invalid record: bad"


async def test_429_with_retry_after_is_retried_no_sooner_and_nothing_is_stored():
    """A 429 (as a scripted answer) comes back unavailable with the server's Retry-After."""
    async with OtlpReceiver() as receiver:
        receiver.script(Reply(429, "slow down", {"Retry-After": "7"}))
        outcome = await send(otlp_config(receiver.url), make_events(["x"]))
        assert receiver.stored == {}
    assert outcome.verdict is Verdict.UNAVAILABLE
    assert outcome.retry_after_s == 7
    assert outcome.detail == "OTLP otlp: HTTP 429: slow down"


async def test_a_refused_connection_is_retried():
    """No receiver on the port: no answer, classified as unavailable."""
    outcome = await send(otlp_config(f"http://127.0.0.1:{free_port()}"), make_events(["x"]))
    assert outcome.verdict is Verdict.UNAVAILABLE
    assert "failed" in outcome.detail


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (429, Verdict.UNAVAILABLE),
        (502, Verdict.UNAVAILABLE),
        (503, Verdict.UNAVAILABLE),
        (504, Verdict.UNAVAILABLE),
        (413, Verdict.SPLIT),
        (400, Verdict.SPLIT),
        (301, Verdict.OPERATOR_NEEDED),
        (401, Verdict.OPERATOR_NEEDED),
        (403, Verdict.OPERATOR_NEEDED),
        (404, Verdict.OPERATOR_NEEDED),
        (405, Verdict.OPERATOR_NEEDED),
    ],
)
def test_each_status_class_gets_its_verdict(status, verdict):
    """Retryable, split and configuration statuses map as the status table says."""
    assert answer(status).verdict is verdict


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "otlp_5xx"), (501, "otlp_5xx"), (408, "otlp_4xx"), (422, "otlp_4xx")],
)
def test_other_statuses_dead_letter_every_record(status, reason):
    """500, 501 and other 4xx are not retryable per the spec: every record is refused."""
    outcome = answer(status, b"nope", records=3)
    assert [(r.index, r.reason) for r in outcome.rejected] == [(i, reason) for i in range(3)]
    assert outcome.rejected[0].detail == f"OTLP otlp: HTTP {status}: nope"


def test_retry_statuses_extend_the_retryable_list():
    """retry_statuses = [500] turns a 500 into a retry, and the spec's four stay retried."""
    assert answer(500, retry_statuses=[500]).verdict is Verdict.UNAVAILABLE
    assert answer(503, retry_statuses=[500]).verdict is Verdict.UNAVAILABLE
    assert answer(530, retry_statuses=[500]).verdict is Verdict.ANSWERED


def test_retry_after_is_honoured_as_an_http_date_and_on_configuration_problems():
    """Retry-After in either form reaches the Outcome of a retryable or configuration status."""
    date = "Wed, 21 Oct 2099 07:28:00 GMT"
    assert answer(503, headers={"Retry_After": date}).retry_after_s > 0
    assert answer(401, headers={"Retry_After": "3"}).retry_after_s == 3


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (b"", {}, "(no body)"),
        (b"plain words", {"Content_Type": "text/plain"}, "plain words"),
        (
            STATUS(code=3, message="pb says").SerializeToString(),
            {"Content_Type": "application/x-protobuf"},
            "pb says",
        ),
        (
            json_format.MessageToJson(STATUS(code=3, message="json says")).encode(),
            {"Content_Type": "application/json"},
            "json says",
        ),
        (
            b"\xff\xfe not a status",
            {"Content_Type": "application/x-protobuf"},
            "\ufffd\ufffd not a status",
        ),
        (b"{not json", {"Content_Type": "application/json"}, "{not json"),
    ],
    ids=["empty", "text", "protobuf-status", "json-status", "bad-protobuf", "bad-json"],
)
def test_error_bodies_are_read_as_status_when_they_are_and_tolerated_otherwise(
    body, headers, expected
):
    """The detail carries Status.message, or the body's text, or says there was no body."""
    outcome = answer(400, body, records=1, headers=headers)
    assert outcome.rejected[0].detail == f"OTLP otlp: HTTP 400: {expected}"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"", {}),
        (b'{"partialSuccess":null}', {"Content_Type": "application/json"}),
        (
            ExportLogsServiceResponse(partial_success={}).SerializeToString(),
            {"Content_Type": "application/x-protobuf"},
        ),
        (ExportLogsServiceResponse(partial_success={"error_message": "w"}).SerializeToString(), {}),
        (b"\xff\xff garbage", {"Content_Type": "application/x-protobuf"}),
        (b"<html>ok</html>", {"Content_Type": "application/json"}),
    ],
    ids=[
        "empty",
        "rotel-json",
        "empty-partial",
        "warning-only",
        "unreadable-pb",
        "unreadable-json",
    ],
)
def test_2xx_answers_that_reject_nothing_are_delivered(body, headers):
    """Empty, null or empty partial success, a warning, or an unreadable body: all delivered."""
    assert answer(200, body, headers=headers) == Outcome.delivered()


def test_a_2xx_without_content_type_is_read_in_the_encoding_sent():
    """A JSON partial success without a Content-Type is still read as JSON by a JSON sink."""
    body = b'{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"old"}}'
    outcome = answer(200, body, records=2, encoding="json")
    assert [r.detail for r in outcome.rejected] == ["2 of 2 rejected: old"] * 2


def test_the_config_table_is_checked(tmp_path: Path):
    """Defaults follow the spec; bad retry_statuses and resource.service.name are refused with their key."""
    config = parse_config({"sinks": {"o": {"type": "otlp", "endpoint": "http://127.0.0.1:4318"}}})
    sink = config.sinks["o"]
    assert isinstance(sink, OtlpSinkConfig)
    assert (sink.encoding, sink.compression, sink.service_name) == ("protobuf", "gzip", "kernel")
    assert sink.retryable() == {429, 502, 503, 504}
    for bad, where in [
        ({"retry_statuses": [400]}, "retry_statuses"),
        ({"retry_statuses": [404]}, "retry_statuses"),
        ({"retry_statuses": [200]}, "retry_statuses"),
        ({"resource": {"service.name": "x"}}, "resource"),
        ({"encoding": "thrift"}, "encoding"),
        ({"service_name": ""}, "service_name"),
    ]:
        table = {"type": "otlp", "endpoint": "http://127.0.0.1:4318", **bad}
        with pytest.raises(ConfigError, match=where):
            parse_config({"sinks": {"o": table}})


async def test_an_answer_over_4_mib_is_read_no_further_and_the_batch_counts_as_delivered():
    """The spec caps response parsing: a huge 2xx body is cut at 4 MiB and not parsed."""
    huge = b"\x0a" + b"\xff" * (5 * 1024 * 1024)
    async with OtlpReceiver() as receiver:
        receiver.script(Reply(200, huge, {"Content-Type": "application/x-protobuf"}))
        outcome = await send(otlp_config(receiver.url), make_events(["x"]))
    assert outcome == Outcome.delivered()


def test_a_truncated_partial_success_is_not_trusted():
    """A cut answer is unreadable, even when its first bytes would say records were rejected."""
    body = ExportLogsServiceResponse(
        partial_success={"rejected_log_records": 1}
    ).SerializeToString()
    sink = make_sink(otlp_config("http://127.0.0.1:9"))
    assert sink.answer(HttpReply(200, CIMultiDict(), body), 1).rejected
    assert (
        sink.answer(HttpReply(200, CIMultiDict(), body, truncated=True), 1) == Outcome.delivered()
    )
