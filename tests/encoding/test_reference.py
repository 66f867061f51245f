"""Records and gaps become the JSON events of DESIGN.md section 3, deterministically."""

from __future__ import annotations

import tracemalloc
from types import MappingProxyType

import orjson

from forwarder.encoding.reference import Identity, encode_gap, encode_record, format_timestamp
from forwarder.source.parser import Record

BOOT = "3f1c0000-0000-4000-8000-000000000001"
IDENTITY = Identity(host="node-1", boot_id=BOOT, clock_offset_ns=1_764_182_470_000_000_000)


def plain_record(**changes):
    """A user.info record with no optional parts, with some fields changed."""
    values = {
        "facility_code": 1,
        "level_code": 6,
        "seq": 1234,
        "ts_usec": 59_853_793,
        "flags": "-",
        "message": "hello",
    }
    values.update(changes)
    return Record(**values)


def test_record_event_has_every_documented_field():
    """A record's event carries identity, time, severity names and codes, and the text."""
    event = encode_record(plain_record(), IDENTITY)
    assert event.fields == {
        "event": "kmsg",
        "id": f"{BOOT}-1234",
        "@timestamp": "2025-11-26T18:42:09.853793Z",
        "host": "node-1",
        "boot_id": BOOT,
        "seq": 1234,
        "monotonic_us": 59_853_793,
        "facility": "user",
        "facility_code": 1,
        "level": "info",
        "level_code": 6,
        "flags": "-",
        "message": "hello",
    }
    assert orjson.loads(event.json) == event.fields
    assert (event.kind, event.id, event.boot_id, event.checkpoint_seq) == (
        "kmsg",
        f"{BOOT}-1234",
        BOOT,
        1234,
    )
    assert event.timestamp_ns == IDENTITY.clock_offset_ns + 59_853_793_000


def test_same_record_encodes_to_identical_bytes():
    """Encoding a record twice (a re-send) gives byte-identical JSON, id and timestamp."""
    record = plain_record(subsystem="net", device="n2", fields=MappingProxyType({"K": "v"}))
    first, second = encode_record(record, IDENTITY), encode_record(record, IDENTITY)
    assert first.json == second.json
    assert (first.id, first.timestamp_ns) == (second.id, second.timestamp_ns)


def test_timestamp_comes_from_offset_and_ts_usec_only():
    """@timestamp is clock_offset + ts_usec: another offset shifts it, the seq does not."""
    later = Identity("node-1", BOOT, IDENTITY.clock_offset_ns + 1_000_000_000)
    base = encode_record(plain_record(), IDENTITY)
    assert (
        encode_record(plain_record(), later).fields["@timestamp"] == "2025-11-26T18:42:10.853793Z"
    )
    assert (
        encode_record(plain_record(seq=99), IDENTITY).fields["@timestamp"]
        == base.fields["@timestamp"]
    )


def test_optional_keys_are_omitted_when_absent():
    """subsystem, device, caller and fields appear only when the record has them."""
    fields = encode_record(plain_record(), IDENTITY).fields
    assert not {"subsystem", "device", "caller", "fields"} & fields.keys()


def test_optional_keys_are_present_when_given():
    """A record with caller, subsystem, device and extra keys shows all of them."""
    record = plain_record(
        caller="T123",
        subsystem="pci",
        device="+pci:0000:00:01.0",
        fields=MappingProxyType({"A": "b"}),
    )
    fields = orjson.loads(encode_record(record, IDENTITY).json)
    assert fields["caller"] == "T123"
    assert fields["subsystem"] == "pci"
    assert fields["device"] == "+pci:0000:00:01.0"
    assert fields["fields"] == {"A": "b"}


def test_unnamed_facility_keeps_its_number():
    """Facility 24 (no syslog name) is reported as '24' with code 24."""
    fields = encode_record(plain_record(facility_code=24), IDENTITY).fields
    assert (fields["facility"], fields["facility_code"]) == ("24", 24)


def test_gap_event_fields():
    """An overwrite gap names first/last seq, the count and the reason, and moves the checkpoint."""
    event = encode_gap(
        host="node-1",
        boot_id=BOOT,
        first_seq=10,
        last_seq=14,
        reason="overwritten",
        timestamp_ns=IDENTITY.clock_offset_ns,
        checkpoint_boot_id=BOOT,
        checkpoint_seq=14,
    )
    assert orjson.loads(event.json) == {
        "event": "gap",
        "id": f"{BOOT}-gap-10",
        "host": "node-1",
        "boot_id": BOOT,
        "first_seq": 10,
        "last_seq": 14,
        "lost": 5,
        "reason": "overwritten",
        "@timestamp": "2025-11-26T18:41:10.000000Z",
    }
    assert (event.kind, event.boot_id, event.checkpoint_seq) == ("gap", BOOT, 14)


def test_reboot_gap_has_unknown_end_and_count():
    """A reboot gap has last_seq and lost null, names the old boot, and positions on the new one."""
    event = encode_gap(
        host="node-1",
        boot_id="old-boot",
        first_seq=51,
        last_seq=None,
        reason="reboot",
        timestamp_ns=0,
        checkpoint_boot_id=BOOT,
        checkpoint_seq=-1,
    )
    fields = orjson.loads(event.json)
    assert (fields["boot_id"], fields["first_seq"]) == ("old-boot", 51)
    assert fields["last_seq"] is None
    assert fields["lost"] is None
    assert fields["reason"] == "reboot"
    assert (event.boot_id, event.checkpoint_seq) == (BOOT, -1)


def test_format_timestamp_is_rfc3339_utc_with_microseconds():
    """Nanoseconds are truncated to microseconds and written with a Z suffix."""
    assert format_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert format_timestamp(1_764_182_530_123_456_789) == "2025-11-26T18:42:10.123456Z"


def test_encoded_json_holds_no_oversized_buffer():
    """An event's JSON bytes take about their own size in memory, not orjson's 4 KiB buffer."""
    record = Record(0, 6, 1, 10, "-", "short message")
    who = Identity(host="h", boot_id="b", clock_offset_ns=0)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        jsons = [encode_record(record, who).json for _ in range(500)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "lineno"))
    assert grown / len(jsons) < 1024
