"""The loki sink against a strict loopback Loki receiver."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cramjam
import orjson
import pytest

from forwarder.config import parse_config
from forwarder.encoding.reference import format_timestamp
from forwarder.errors import (
    ConfigError,
)
from forwarder.sinks.base import Batch, outcome_of
from forwarder.sinks.loki.push import Entry, Stream, protobuf_body, rejected_entries
from forwarder.sinks.loki.sink import LokiSink, LokiSinkConfig
from forwarder.sinks.outcome import Outcome, Verdict
from tests.receivers.base import Reply
from tests.receivers.loki import LokiReceiver, decode_protobuf_push, go_time
from tests.support.events import gap_event, identity, make_events, make_kernel_event

ENCODINGS = [
    {"encoding": "protobuf"},
    {"encoding": "json"},
    {"encoding": "json", "compression": "gzip"},
]


def loki_config(receiver: LokiReceiver, **options: Any) -> LokiSinkConfig:
    """A loki sink table pointing at the receiver."""
    return LokiSinkConfig.model_validate({"type": "loki", "endpoint": receiver.url, **options})


async def send(config: LokiSinkConfig, events: list[Any], **kwargs: Any) -> Outcome:
    """Send one batch through a fresh sink; its Outcome (no answer classified as the worker does)."""
    sink = LokiSink("loki", config, **kwargs)
    await sink.start()
    try:
        return await outcome_of(sink, sink.send(Batch(events)))
    finally:
        await sink.close()


@pytest.mark.parametrize("options", ENCODINGS, ids=["protobuf", "json", "json-gzip"])
async def test_every_record_arrives_with_labels_metadata_and_exact_timestamp(options):
    """Each encoding delivers every record with its labels, metadata and @timestamp in ns."""
    events = make_events([f"line {i}" for i in range(20)], subsystem="net")
    async with LokiReceiver() as loki:
        result = await send(loki_config(loki, **options), events)
        assert result == Outcome.delivered()
        stored = loki.entries("line ")
    assert [entry.line for entry in stored] == [f"line {i}" for i in range(20)]
    assert [entry.timestamp_ns for entry in stored] == [
        event.timestamp_ns // 1000 * 1000 for event in events
    ]
    assert [format_timestamp(entry.timestamp_ns) for entry in stored] == [
        event.fields["@timestamp"] for event in events
    ]
    first = stored[0]
    assert first.labels == {"host": "node-1", "facility": "user", "level": "info"}
    assert first.metadata == {
        "seq": "100",
        "boot_id": events[0].boot_id,
        "id": events[0].id,
        "subsystem": "net",
        "device": "n2",
    }


@pytest.mark.parametrize("options", ENCODINGS, ids=["protobuf", "json", "json-gzip"])
async def test_resend_is_identical_so_loki_deduplicates(options):
    """Sending the same batch twice stores nothing new: every entry is a duplicate."""
    events = make_events([f"dup {i}" for i in range(10)])
    async with LokiReceiver() as loki:
        config = loki_config(loki, **options)
        await send(config, events)
        await send(config, events)
        assert len(loki.stored) == 10
        assert loki.duplicates == 10
        assert loki.requests[0].body == loki.requests[1].body


async def test_streams_are_grouped_and_entries_sorted_by_timestamp():
    """Levels split streams; a gap event stamped earlier still lands in timestamp order."""
    who = identity()
    events = [
        *make_events(["warn a", "warn b"], who=who, level_code=4),
        *make_events(["info c"], who=who, first_seq=102),
        gap_event(who, 90, 95),
    ]
    async with LokiReceiver() as loki:
        await send(loki_config(loki, encoding="json"), events)
        push = orjson.loads(loki.requests[0].body)
    by_level = {stream["stream"].get("level", "-"): stream for stream in push["streams"]}
    assert set(by_level) == {"warning", "info", "-"}
    assert [value[1] for value in by_level["warning"]["values"]] == ["warn a", "warn b"]
    gap_line = orjson.loads(by_level["-"]["values"][0][1])
    assert gap_line["event"] == "gap"


async def test_line_json_sends_the_whole_record():
    """With line = "json" each line is the record's JSON, byte for byte."""
    events = make_events(["whole record"])
    async with LokiReceiver() as loki:
        await send(loki_config(loki, line="json"), events)
        assert loki.entries()[0].line == events[0].json.decode()


async def test_tenant_header_and_basic_auth_from_file(tmp_path: Path):
    """X-Scope-OrgID carries tenant_id and the password is read from password_file."""
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    expected = "Basic " + base64.b64encode(b"kmsg:s3cret").decode()
    async with LokiReceiver(tenant_id="team-a", authorization=expected) as loki:
        config = loki_config(loki, tenant_id="team-a", username="kmsg", password_file=str(secret))
        await send(config, make_events(["hello"]))
        assert len(loki.stored) == 1
        assert loki.requests[0].headers["X-Scope-OrgID"] == "team-a"


async def test_missing_tenant_is_a_configuration_error():
    """Loki's 401 (no org id) needs an operator: retried, data kept."""
    async with LokiReceiver(tenant_id="team-a") as loki:
        outcome = await send(loki_config(loki), make_events(["x"]))
    assert outcome.verdict is Verdict.OPERATOR_NEEDED


@pytest.mark.parametrize(
    ("reply", "verdict", "retry_after_s"),
    [
        (Reply(429, "slow down", {"Retry-After": "7"}), Verdict.UNAVAILABLE, 7.0),
        (Reply(503, "unavailable"), Verdict.UNAVAILABLE, None),
        (Reply(500, "boom"), Verdict.UNAVAILABLE, None),
        (Reply(413, "too big"), Verdict.SPLIT, None),
        (Reply(403, "forbidden"), Verdict.OPERATOR_NEEDED, None),
        (Reply(404, "no such path"), Verdict.OPERATOR_NEEDED, None),
    ],
)
async def test_status_classes(reply, verdict, retry_after_s):
    """Each failing status maps to its verdict, with the server's Retry-After."""
    async with LokiReceiver() as loki:
        loki.script(reply)
        outcome = await send(loki_config(loki), make_events(["x"]))
        assert (outcome.verdict, outcome.retry_after_s) == (verdict, retry_after_s)
        assert loki.stored == {}


async def test_other_4xx_dead_letters_the_batch():
    """A 4xx other than 400/401/403/404/413 rejects every entry as loki_4xx."""
    events = make_events(["x", "y"])
    async with LokiReceiver() as loki:
        loki.script(Reply(422, "unprocessable"))
        result = await send(loki_config(loki), events)
    assert [(r.index, r.reason) for r in result.rejected] == [(0, "loki_4xx"), (1, "loki_4xx")]


async def test_413_halves_fit():
    """A body over the server's limit is refused whole; each half then goes through."""
    events = make_events([f"big {i} " + "x" * 200 for i in range(8)])
    async with LokiReceiver(max_body_bytes=1500) as loki:
        config = loki_config(loki, encoding="json")
        outcome = await send(config, events)
        assert outcome.verdict is Verdict.SPLIT
        await send(config, events[:4])
        await send(config, events[4:])
        assert len(loki.entries("big ")) == 8


async def test_partial_400_rejects_exactly_the_ignored_entries():
    """On a partial 400 only the entries Loki listed are rejected, with Loki's reason."""
    events = make_events([f"ok {i}" if i % 3 else f"bad {i}" for i in range(12)])
    async with LokiReceiver() as loki:
        loki.ignore_lines_containing.add("bad")
        result = await send(loki_config(loki), events)
        assert [events[rejection.index].id for rejection in result.rejected] == [
            event.id for event in events if "bad" in str(event.fields["message"])
        ]
        assert {rejection.reason for rejection in result.rejected} == {"loki_400"}
        assert "too far behind" in result.rejected[0].detail
        assert len(loki.entries("ok ")) == 8
        assert result.retry == ()


async def test_partial_400_with_a_cut_list_rejects_the_whole_stream():
    """When Loki lists fewer ignored entries than it counts, that stream is all dead-lettered."""
    who = identity()
    warnings = make_events([f"bad w{i}" for i in range(5)] + ["fine w"], who=who, level_code=4)
    infos = make_events(["fine i"], who=who, first_seq=200)
    async with LokiReceiver(max_returned_errors=2) as loki:
        loki.ignore_lines_containing.add("bad")
        result = await send(loki_config(loki), warnings + infos)
    assert sorted(r.index for r in result.rejected) == list(range(len(warnings)))
    assert "did not list" in next(r.detail for r in result.rejected if r.index == 5)


async def test_status_260_dead_letters_as_blocked():
    """HTTP 260 (ingestion blocked, data discarded) rejects every entry as loki_blocked."""
    async with LokiReceiver() as loki:
        loki.script(Reply(260, "blocked by policy"))
        result = await send(loki_config(loki), make_events(["a", "b"]))
    assert [r.reason for r in result.rejected] == ["loki_blocked", "loki_blocked"]


async def test_local_checks_reject_what_loki_would_before_sending():
    """Too-long lines and too-old entries are rejected locally; the rest is sent."""
    events = make_events(["short", "y" * 300])
    async with LokiReceiver() as loki:
        result = await send(loki_config(loki, max_line_bytes=100), events)
        assert [(r.index, r.reason) for r in result.rejected] == [(1, "loki_line_too_long")]
        assert [entry.line for entry in loki.entries()] == ["short"]
        far_future = events[0].timestamp_ns / 1e9 + 30 * 24 * 3600
        result = await send(loki_config(loki), events[:1], clock=lambda: far_future)
        assert [r.reason for r in result.rejected] == ["loki_too_old"]
        assert len(loki.requests) == 1


async def test_label_value_over_2048_bytes_is_rejected_locally():
    """A record whose label value Loki would refuse is rejected, the others are sent."""
    events = make_events(["long host"], who=identity(host="h" * 3000)) + make_events(["fine"])
    async with LokiReceiver() as loki:
        result = await send(loki_config(loki), events)
        assert [(r.index, r.reason) for r in result.rejected] == [(0, "loki_labels")]
        assert [entry.line for entry in loki.entries()] == ["fine"]


async def test_connection_refused_is_retryable():
    """A receiver that is gone is no answer: 'unavailable', retried."""
    async with LokiReceiver() as loki:
        config = loki_config(loki)
    outcome = await send(config, make_events(["x"]))
    assert outcome.verdict is Verdict.UNAVAILABLE


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"label_fields": ["host", "seq"]}, "cannot be labels"),
        ({"label_fields": ["boot_id"]}, "cannot be labels"),
        ({"labels": {"__name": "x"}}, "label name"),
        ({"labels": {"1job": "x"}}, "label name"),
        ({"encoding": "protobuf", "compression": "gzip"}, "snappy"),
        ({"structured_metadata": ["nope"]}, "unknown record fields"),
        ({"bearer_token": "t", "username": "u"}, "one kind of authentication"),
        ({"labels": {"job": "k"}, "label_fields": ["job"]}, "cannot be labels"),
        ({"labels": {}, "label_fields": ["level"]}, "every stream needs a label"),
    ],
)
def test_config_rejects_what_loki_would_refuse(options, message):
    """Invalid label and encoding settings fail at config time, naming the problem."""
    raw = {"sinks": {"loki": {"type": "loki", "endpoint": "http://127.0.0.1:3100", **options}}}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_endpoint_without_path_gets_the_push_path():
    """A bare endpoint gets /loki/api/v1/push; an endpoint with a path is kept."""
    bare = LokiSinkConfig(type="loki", endpoint="http://loki:3100")
    proxied = LokiSinkConfig(type="loki", endpoint="https://gw/tenant/loki/api/v1/push")
    assert str(bare.push_url()) == "http://loki:3100/loki/api/v1/push"
    assert str(proxied.push_url()) == "https://gw/tenant/loki/api/v1/push"


@pytest.mark.timeout(120)  # a 256 MiB line: 6 s on a quiet machine, 17 s on a busy one
@pytest.mark.parametrize("size", [0, 127, 128, 16_383, 16_384, 2**21 - 1, 2**21, 2**28])
def test_protobuf_lengths_decode_with_the_official_runtime(size):
    """Every varint width (1 to 5 bytes) and empty strings decode with the protobuf runtime."""
    event = make_events(["x"])[0]
    timestamp_ns = 2**34 * 1_000_000_000 + 999_999_999  # seconds needing a 5-byte varint
    entry = Entry(timestamp_ns, "y" * size, (("seq", "1"), ("device", "")), event)
    body = cramjam.snappy.compress_raw(protobuf_body([Stream((("host", "h"),), [entry])]))
    ((labels, values),) = decode_protobuf_push(bytes(body))
    assert labels == {"host": "h"}
    assert values == [(timestamp_ns, "y" * size, {"seq": "1", "device": ""})]


def _streams() -> tuple[list[Stream], list[Entry]]:
    events = make_events(["a", "b", "c"])
    entries = [
        Entry(e.timestamp_ns // 1000 * 1000, str(e.fields["message"]), (), e) for e in events
    ]
    labels = (("host", "node-1"), ("level", "info"))
    return [Stream(labels, entries)], entries


def test_parser_reads_the_older_ingester_format():
    """The pre-2.9 per-entry form (stream on every line) names the entry by timestamp."""
    streams, entries = _streams()
    body = (
        f"entry with timestamp {go_time(entries[1].timestamp_ns)} ignored, reason: 'entry out of order'"
        ' for stream: {host="node-1", level="info"},\ntotal ignored: 1 out of 3'
    )
    assert [e.event.id for e, _ in rejected_entries(body, streams).values()] == [
        entries[1].event.id
    ]


def test_parser_reads_distributor_errors_and_grouping():
    """Distributor 'too old' and 'line too long' errors, grouped with '; ', name their entries."""
    streams, entries = _streams()
    stream = '{host="node-1", level="info", service_name="kmsg"}'
    body = (
        f"2 errors like: entry for stream '{stream}' has timestamp too old: "
        f"{go_time(entries[0].timestamp_ns)}, oldest acceptable timestamp is: 2026-01-01 00:00:00 +0000 UTC; "
        f"Max entry size '0' bytes exceeded for stream '{stream}' while adding an entry with length '1' bytes"
    )
    ids = {e.event.id for e, _ in rejected_entries(body, streams).values()}
    assert ids == {entry.event.id for entry in entries}  # a, then b and c by length 1


def test_parser_rejects_everything_when_the_body_names_nothing():
    """A 400 that names no entry (whole request invalid) dead-letters the whole batch."""
    streams, entries = _streams()
    found = rejected_entries("error at least one label pair is required per stream", streams)
    assert len(found) == len(entries)


def test_parser_go_time_with_offset_and_fraction():
    """Timestamps printed in a non-UTC zone with a fraction still match the entry."""
    streams, entries = _streams()
    seconds, nanos = divmod(entries[2].timestamp_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=timezone(timedelta(hours=1)))
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    shifted = f"{moment:%Y-%m-%d %H:%M:%S}{fraction} +0100 CET"
    body = f"entry with timestamp {shifted} ignored, reason: 'x',\nuser 'fake', total ignored: 1 out of 3 for stream: {{host=\"node-1\", level=\"info\"}}"
    assert [e.event.id for e, _ in rejected_entries(body, streams).values()] == [
        entries[2].event.id
    ]


async def test_a_kernel_event_can_be_labelled_by_event_and_class():
    """label_fields with event and class: a kernel event's stream names its class, a record's not."""
    who = identity()
    events = [*make_events(["before"], who=who), make_kernel_event("oom_kill", 100, who=who)]
    options = {"label_fields": ["host", "level", "event", "class"]}
    async with LokiReceiver() as loki:
        assert await send(loki_config(loki, **options), events) == Outcome.delivered()
        stored = loki.entries()
    labels = sorted((entry.labels for entry in stored), key=len)
    assert labels[0] == {"host": "node-1", "level": "info", "event": "kmsg"}
    assert labels[1] == {
        "host": "node-1",
        "level": "alert",
        "event": "kernel_event",
        "class": "oom_kill",
    }
    kernel_line = next(entry.line for entry in stored if "kernel_event" in entry.line)
    assert orjson.loads(kernel_line)["class"] == "oom_kill"
