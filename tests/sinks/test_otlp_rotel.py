"""The otlp sink through Rotel, a real OpenTelemetry collector, in both encodings.

Rotel (tests/support/rotel.py) answers 400 to anything that is not valid OTLP for its
content type, then re-exports what it took over OTLP/HTTP to our strict receiver, which
decodes it with opentelemetry-proto. Every field of every record is compared with what the
issue's mapping table says, written out here independently of the sink's mapping module.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.encoding.reference import Event, encode_record
from forwarder.sinks.base import Batch
from forwarder.sinks.otlp.config import OtlpSinkConfig
from forwarder.sinks.otlp.sink import OtlpSink
from forwarder.sinks.outcome import Outcome
from forwarder.source.parser import Record
from tests.receivers.otlp import OtlpReceiver
from tests.support.events import gap_event, identity
from tests.support.rotel import RotelAgent
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.timeout(90)
SEVERITY = {"emerg": 21, "alert": 19, "crit": 18, "err": 17, "warning": 13, "notice": 10,
            "info": 9, "debug": 5}  # fmt: skip
OBSERVED_NS = 1_790_000_000_123_456_789


def events() -> list[Event]:
    """Records of every level, with and without optional fields; a gap; a kernel event."""
    who = identity()
    records = [
        Record(facility_code=0, level_code=level, seq=200 + level, ts_usec=1_000_000 + level,
               flags="-", message=f"level {level} é ✓", caller=f"T{level}" if level % 2 else None,
               subsystem="pci" if level == 3 else None, device="+pci:0000:00:1f.2" if level == 3 else None,
               fields={"DRIVER": "ahci"} if level == 3 else {})
        for level in range(8)
    ]  # fmt: skip
    records.append(Record(3, 6, 300, 2_000_000, "c", ""))  # an empty message, a continuation
    built = [encode_record(record, who) for record in records]
    built.append(gap_event(who, 100, 150))
    fields = {
        "event": "kernel_event", "class": "hung_task", "id": f"{who.boot_id}-400-hung_task",
        "host": who.host, "boot_id": who.boot_id, "first_seq": 400, "last_seq": 402,
        "record_count": 3, "complete": False, "@timestamp": "2026-12-01T00:00:00.000001Z",
        "level": "err", "fields": {"pid": 77, "comm": "jbd2/sda1-8", "blocked_s": 122,
                                   "stack": ["io_schedule", "bit_wait_io"]},
    }  # fmt: skip
    timestamp_ns = who.clock_offset_ns + 3_000_000_000
    built.append(
        Event("kernel_event", fields["id"], who.boot_id, 402, timestamp_ns, orjson.dumps(fields))
    )
    return built


def expected(event: Event) -> dict[str, Any]:
    """The issue's mapping table for one event, as plain values."""
    fields = event.fields
    common = {
        "time_unix_nano": event.timestamp_ns // 1000 * 1000,
        "observed_time_unix_nano": OBSERVED_NS,
    }
    if event.kind == "kmsg":
        attributes = {"log.record.uid": fields["id"]}
        for key in ("seq", "boot_id", "facility", "facility_code", "level_code", "flags",
                    "monotonic_us", "caller", "subsystem", "device", "fields"):  # fmt: skip
            if key in fields:
                attributes[f"kmsg.{key}"] = fields[key]
        return common | {
            "body": fields["message"],
            "severity_number": SEVERITY[fields["level"]],
            "severity_text": fields["level"],
            "event_name": "",
            "attributes": attributes,
        }
    kind = fields["event"]
    envelope = {"event", "id", "host", "boot_id", "@timestamp", "level"}
    attributes = {"log.record.uid": fields["id"], "kmsg.boot_id": fields["boot_id"]}
    attributes |= {
        f"kmsg.{kind}.{k}": v for k, v in fields.items() if k not in envelope and v is not None
    }
    level = fields.get("level", "warning")
    body = "51 kernel records lost (overwritten)" if kind == "gap" else "kernel event hung_task"
    return common | {
        "body": body,
        "severity_number": SEVERITY[level],
        "severity_text": level,
        "event_name": f"kmsg.{kind}",
        "attributes": attributes,
    }


def received(log: Any) -> dict[str, Any]:
    """One stored record as plain values."""
    record = log.record
    return {
        "time_unix_nano": record.time_unix_nano,
        "observed_time_unix_nano": record.observed_time_unix_nano,
        "body": log.body,
        "severity_number": record.severity_number,
        "severity_text": record.severity_text,
        "event_name": record.event_name,
        "attributes": log.attributes,
    }


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": "none"},
        {"encoding": "json"},
        {"encoding": "json", "compression": "none"},
    ],
    ids=["protobuf-gzip", "protobuf", "json-gzip", "json"],
)
async def test_every_field_survives_a_real_collector(options: dict[str, Any], tmp_path: Path):
    """Rotel takes both encodings (200) and re-exports every record with every field as mapped."""
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("5f3c0e9d8a7b6c5d4e3f2a1b0c9d8e7f\n")
    batch = events()
    async with OtlpReceiver(canonical=False) as downstream:
        rotel = RotelAgent(tmp_path, downstream.url)
        try:
            await asyncio.to_thread(rotel.start)
            config = OtlpSinkConfig.model_validate(
                {"type": "otlp", "endpoint": rotel.url, "resource": {"cluster": "c1"}, **options}
            )
            sink = OtlpSink(
                "otlp", config, host="node-7", clock_ns=lambda: OBSERVED_NS,
                environ={"NODE_NAME": "node-7.k8s"}, machine_id_path=machine_id,
            )  # fmt: skip
            await sink.start()
            try:
                assert await sink.send(Batch(batch)) == Outcome.delivered()
            finally:
                await sink.close()
            await wait_until_async(
                lambda: len(downstream.stored) == len(batch),
                timeout_s=30,
                what="Rotel to re-export every record",
            )
        finally:
            await asyncio.to_thread(rotel.stop)
    by_uid = {log.attributes["log.record.uid"]: log for log in downstream.stored.values()}
    for event in batch:
        assert received(by_uid[event.fields["id"]]) == expected(event)
    log = by_uid[batch[0].fields["id"]]
    assert log.resource == {
        "host.name": "node-7",
        "host.id": "5f3c0e9d8a7b6c5d4e3f2a1b0c9d8e7f",
        "os.type": "linux",
        "service.name": "kernel",
        "k8s.node.name": "node-7.k8s",
        "cluster": "c1",
    }
    assert log.scope_name == "kmsg-forwarder"
    assert log.scope_version


async def test_rotel_refuses_what_is_not_otlp(tmp_path: Path):
    """The collector is strict: an int64 sent as a JSON number is a 400, as the spec's rules say."""
    async with OtlpReceiver(canonical=False) as downstream:
        rotel = RotelAgent(tmp_path, downstream.url)
        try:
            await asyncio.to_thread(rotel.start)
            config = OtlpSinkConfig.model_validate(
                {"type": "otlp", "endpoint": rotel.url, "encoding": "json", "compression": "none"}
            )
            client = config.client(config.logs_url())
            await client.start()
            try:
                bad = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":5}]}]}]}'
                answer = await client.send(bad, {"Content-Type": "application/json"})
            finally:
                await client.close()
        finally:
            await asyncio.to_thread(rotel.stop)
    assert answer.status == 400
