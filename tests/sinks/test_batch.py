"""A Batch of chunk slices: its accessors, and every sink sends it exactly as the same events."""

from __future__ import annotations

import io
from types import MappingProxyType
from typing import Any

import pytest

from forwarder.encoding.chunk import Slice
from forwarder.encoding.reference import Identity
from forwarder.sinks.base import Batch, Sink
from forwarder.sinks.elasticsearch.sink import ElasticsearchSink, ElasticsearchSinkConfig
from forwarder.sinks.file import FileSink
from forwarder.sinks.http.sink import HttpSink, HttpSinkConfig
from forwarder.sinks.loki.sink import LokiSink, LokiSinkConfig
from forwarder.sinks.outcome import Outcome
from forwarder.sinks.stdout import StdoutSink
from forwarder.source.parser import Record
from tests.receivers.elasticsearch import ElasticsearchReceiver
from tests.receivers.http import HttpReceiver
from tests.receivers.loki import LokiReceiver
from tests.support.events import gap_event, identity, make_chunk

WHO = identity()
MESSAGES = ["plain", 'quoted "x"', "back\\slash", "é unicode €", "tab\there", "", 'a,"b":c']


def records() -> list[Record]:
    """Records with every shape the encoder writes: escapes, dictionaries, callers, fields."""
    shapes = []
    for index, message in enumerate(MESSAGES * 3):
        shapes.append(
            Record(
                facility_code=index % 4,
                level_code=index % 8,
                seq=100 + index,
                ts_usec=59_000_000 + index * 1000,
                flags="-",
                message=message,
                subsystem=["net", None, "pci"][index % 3],
                device=["n2", None, "+pci:0000:00:1f.3"][index % 3],
                caller="T12" if index % 5 == 0 else None,
                fields=MappingProxyType({"OTHER": "v"} if index % 7 == 3 else {}),
            )
        )
    return shapes


def two_ways(*, gap: bool = True) -> tuple[Batch, Batch]:
    """The same records (and a gap) as slices of a chunk, and as one Event each."""
    chunk = make_chunk(records(), WHO)
    first = [gap_event(WHO, 90, 99)] if gap else []
    sliced = Batch([*first, Slice(chunk, 0, 5), Slice(chunk, 5, len(chunk))])
    events = Batch([*first, *(chunk.event(index) for index in range(len(chunk)))])
    return sliced, events


def test_a_batch_of_slices_reads_like_its_events():
    """len, events, first/last id, lines and ndjson agree with the per-event view."""
    sliced, events = two_ways()
    assert len(sliced) == len(events) == len(MESSAGES) * 3 + 1
    assert list(sliced.events) == list(events.events)
    assert sliced.events[-1] == events.events[-1]
    assert sliced.events[2:4] == list(events.events)[2:4]
    assert (sliced.first_id, sliced.last_id) == (events.first_id, events.last_id)
    assert sliced.lines() == [event.json for event in events.events]
    assert sliced.ndjson() == b"".join(event.json + b"\n" for event in events.events)


def test_select_keeps_order_and_joins_neighbouring_records():
    """select() picks positions across slices and events; touching records become one slice."""
    sliced, events = two_ways()
    picked = sliced.select([0, 3, 4, 5, 6, 9])
    assert list(picked.events) == [events.events[i] for i in (0, 3, 4, 5, 6, 9)]
    assert [type(part).__name__ for part in picked.parts] == ["Event", "Slice", "Slice"]


async def check(sink: Sink, batch: Batch) -> None:
    """Send one batch through a started sink; it must be delivered."""
    await sink.start()
    try:
        assert await sink.send(batch) == Outcome.delivered()
    finally:
        await sink.close()


async def test_file_and_stdout_write_slices_as_the_events_would(tmp_path):
    """The file and stdout sinks write the same bytes for slices as for events."""
    sliced, events = two_ways()
    outputs = []
    for batch in (sliced, events):
        path = tmp_path / f"out-{len(outputs)}.ndjson"
        await check(FileSink("file", path), batch)
        stream = io.BytesIO()
        await check(StdoutSink("stdout", stream), batch)
        outputs.append((path.read_bytes(), stream.getvalue()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == events.ndjson()


@pytest.mark.parametrize("body_format", ["ndjson", "json_array"])
async def test_http_bodies_of_slices_are_those_of_the_events(body_format):
    """The http sink sends the same body (and idempotency key) for slices as for events."""
    bodies = []
    async with HttpReceiver(body_format=body_format) as receiver:
        config = HttpSinkConfig.model_validate(
            {"type": "http", "endpoint": receiver.url + receiver.path, "format": body_format}
        )
        for batch in two_ways():
            await check(HttpSink("http", config), batch)
        bodies = [(r.body, r.headers["Idempotency-Key"]) for r in receiver.requests]
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]


@pytest.mark.parametrize("action", ["create", "index"])
async def test_bulk_bodies_of_slices_are_those_of_the_events(action):
    """The elasticsearch sink writes the same action lines and documents for slices."""
    async with ElasticsearchReceiver(index="kmsg" if action == "index" else "logs-kmsg") as es:
        config = ElasticsearchSinkConfig.model_validate(
            {"type": "elasticsearch", "endpoint": es.url, "index": es.index, "action": action}
        )
        for batch in two_ways():
            es.docs.clear()
            await check(ElasticsearchSink("es", config), batch)
        bodies = [request.body for request in es.requests]
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]


LOKI_OPTIONS: list[dict[str, Any]] = [
    {},
    {"encoding": "json"},
    {"line": "json"},
    {
        "label_fields": ["host", "level_code", "facility_code", "subsystem", "device", "event"],
        "structured_metadata": ["seq", "boot_id", "id", "monotonic_us", "level", "facility"],
    },
    {"structured_metadata": ["seq", "caller", "flags"]},
]


@pytest.mark.parametrize("gap", [False, True], ids=["slices-only", "with-a-gap"])
@pytest.mark.parametrize("options", LOKI_OPTIONS)
async def test_loki_pushes_of_slices_are_those_of_the_events(options, gap):
    """Labels, metadata and lines read from the chunk's columns equal the decoded events'."""
    async with LokiReceiver() as loki:
        config = LokiSinkConfig.model_validate({"type": "loki", "endpoint": loki.url, **options})
        for batch in two_ways(gap=gap):
            await check(LokiSink("loki", config), batch)
        bodies = [request.body for request in loki.requests]
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]


@pytest.mark.parametrize("gap", [False, True], ids=["slices-only", "with-a-gap"])
async def test_loki_refuses_and_ignores_the_same_records_of_slices_as_of_events(gap):
    """Pre-checks (line too long) and a partial 400 name the same positions for slices and events."""
    answers = []
    async with LokiReceiver() as loki:
        loki.ignore_lines_containing = {"plain"}
        config = LokiSinkConfig.model_validate(
            {"type": "loki", "endpoint": loki.url, "max_line_bytes": 10}
        )
        for batch in two_ways(gap=gap):
            sink = LokiSink("loki", config)
            await sink.start()
            try:
                answers.append(await sink.send(batch))
            finally:
                await sink.close()
        bodies = [request.body for request in loki.requests]
    assert answers[0] == answers[1]
    reasons = {rejection.reason for rejection in answers[0].rejected}
    assert reasons == {"loki_line_too_long", "loki_400"}
    assert bodies[0] == bodies[1]


async def test_loki_slices_of_a_boot_with_a_long_id_push_like_the_events():
    """A boot id too long for one-byte metadata lengths takes the pair-by-pair path, same bytes."""
    who = Identity(host="node-1", boot_id="b" * 120, clock_offset_ns=WHO.clock_offset_ns)
    chunk = make_chunk(records(), who)
    batches = [
        Batch([Slice(chunk, 0, len(chunk))]),
        Batch([chunk.event(index) for index in range(len(chunk))]),
    ]
    async with LokiReceiver() as loki:
        config = LokiSinkConfig.model_validate({"type": "loki", "endpoint": loki.url})
        for batch in batches:
            await check(LokiSink("loki", config), batch)
        bodies = [request.body for request in loki.requests]
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]
