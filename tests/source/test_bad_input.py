"""The per-record safety net: a record whose handling fails is set aside, never a crash."""

from __future__ import annotations

import base64

import orjson
from structlog.testing import capture_logs

from forwarder.config import Config
from forwarder.delivery.dead_letters import SourceDeadLetterFile
from forwarder.encoding.reference import encode_record
from forwarder.server import Server
from forwarder.source.bad_input import REJECT_LOG_INTERVAL_S, BadInput
from forwarder.source.parser import Record, render_record
from forwarder.telemetry.events import Emitter
from forwarder.telemetry.metrics import Metrics
from tests.support.forwarder import read_ndjson


class EncoderError(RuntimeError):
    """The failure the test encoder injects."""


def encoder_failing_for(*seqs):
    """encode_record, except that it raises for the given seqs."""

    def encode(record, identity):
        if record.seq in seqs:
            raise EncoderError(f"injected failure for seq {record.seq}")
        return encode_record(record, identity)

    return encode


def make_config(tmp_path, dump):
    """A dump source and one file sink in tmp_path."""
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("0f0f0f0f-0000-4000-8000-000000000001\n")
    return Config.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "source": {"path": str(dump), "boot_id_path": str(boot_id)},
            "sinks": {"out": {"type": "file", "path": str(tmp_path / "out.ndjson")}},
        }
    )


async def run_once(config, encode):
    """Run the whole pipeline over the dump until it ends; return its metrics."""
    metrics = Metrics()
    server = Server(config, encode=encode, metrics=metrics)
    server.prepare()
    assert await server.serve() == 0
    return metrics


def dead_letters(config):
    """The entries of the source dead-letter file."""
    path = config.state_dir / "deadletter" / "@source.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def write_dump(tmp_path, count):
    """A dump of records with seq 1..count; returns (path, raw bytes per seq)."""
    raw = {
        seq: render_record(Record(1, 6, seq, seq * 1000, "-", f"m{seq}"))
        for seq in range(1, count + 1)
    }
    dump = tmp_path / "kmsg.dump"
    dump.write_bytes(b"".join(raw.values()))
    return dump, raw


async def test_failing_record_is_dead_lettered_and_the_rest_delivered(tmp_path):
    """An encoder failure on one seq dead-letters its raw bytes with the error; every other record ships, no gap."""
    dump, raw = write_dump(tmp_path, 5)
    config = make_config(tmp_path, dump)
    metrics = await run_once(config, encoder_failing_for(3))
    events = read_ndjson(tmp_path / "out.ndjson")
    assert [event["seq"] for event in events] == [1, 2, 4, 5]  # no gap event for seq 3
    (entry,) = dead_letters(config)
    assert entry["seq"] == 3
    assert entry["reason"] == "record_failed"
    assert entry["detail"] == "EncoderError: injected failure for seq 3"
    assert base64.b64decode(entry["raw_base64"]) == raw[3]
    assert entry["raw"] == raw[3].decode()
    assert metrics.records_failed._value.get() == 1


async def test_restart_sets_the_same_failing_record_aside_again(tmp_path):
    """A failing last record stays above the checkpoint; a restart dead-letters it again and does not crash."""
    dump, _raw = write_dump(tmp_path, 4)
    config = make_config(tmp_path, dump)
    encode = encoder_failing_for(4)
    await run_once(config, encode)
    metrics = await run_once(config, encode)
    assert [event["seq"] for event in read_ndjson(tmp_path / "out.ndjson")] == [1, 2, 3]
    assert [entry["seq"] for entry in dead_letters(config)] == [4, 4]
    assert metrics.records_failed._value.get() == 1


def test_rejections_are_counted_each_but_logged_in_aggregate(tmp_path):
    """Every rejected record is counted by reason; one warning per interval carries the counts since the last."""
    metrics = Metrics()
    now = [100.0]
    bad_input = BadInput(Emitter(metrics), SourceDeadLetterFile(tmp_path), clock=lambda: now[0])
    with capture_logs() as logs:
        for _ in range(50):
            bad_input.rejected(b"nul_byte")
        bad_input.rejected(b"too_long")
        now[0] += REJECT_LOG_INTERVAL_S
        bad_input.rejected(b"nul_byte")
        bad_input.rejected(b"nul_byte")
        bad_input.flush_log()
    assert metrics.records_rejected.labels("nul_byte")._value.get() == 52
    assert metrics.records_rejected.labels("too_long")._value.get() == 1
    counts = [entry["counts"] for entry in logs if entry["event"] == "records_rejected"]
    assert counts == [{"nul_byte": 1}, {"nul_byte": 50, "too_long": 1}, {"nul_byte": 1}]
