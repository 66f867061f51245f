"""End to end: kernel events out of the real ``kmsg-forwarder run`` over dump files.

Each test writes the shared vectors' raw records (../shared/kernel-events/vectors.json)
into a dump, runs the forwarder as a subprocess into file sinks and reads what a user
would read: the NDJSON output, the checkpoint files and /metrics.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ForwarderFactory
from tests.kernel_events.test_vectors import VECTORS_PATH
from tests.support.forwarder import checkpoint, free_port, read_ndjson
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(120)

VECTOR_GAP_USEC = 100_000_000  # between vectors: longer than any report's quiet time (ATA: 40 s)


def _vectors() -> dict[str, dict[str, Any]]:
    vectors = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]
    return {vector["name"]: vector for vector in vectors}


VECTORS = _vectors()


def _shifted(raw: str, seq_shift: int, ts_shift: int) -> str:
    header, semicolon, body = raw.partition(";")
    prefix, seq, ts_usec, *rest = header.split(",")
    return ",".join([prefix, str(int(seq) + seq_shift), str(int(ts_usec) + ts_shift), *rest]) + (
        semicolon + body
    )


def _dump(names: list[str], path: Path, *, first_seq: int = 1000) -> list[dict[str, Any]]:
    """Write the vectors one after another (seqs renumbered upwards); return their events.

    The expected events come back with their seqs moved like the records.
    """
    lines: list[str] = []
    expected: list[dict[str, Any]] = []
    next_seq, next_ts = first_seq, 10_000_000
    for name in names:
        vector = VECTORS[name]
        seqs = [int(raw.split(",")[1]) for raw in vector["records"]]
        stamps = [int(raw.split(",")[2]) for raw in vector["records"]]
        seq_shift, ts_shift = next_seq - seqs[0], next_ts - stamps[0]
        lines += [_shifted(raw, seq_shift, ts_shift) for raw in vector["records"]]
        for event in vector["expect"]["events"]:
            moved = {
                **event,
                "first_seq": event["first_seq"] + seq_shift,
                "last_seq": event["last_seq"] + seq_shift,
            }
            if "member_seqs" in event:
                moved["member_seqs"] = [seq + seq_shift for seq in event["member_seqs"]]
            expected.append(moved)
        next_seq, next_ts = seqs[-1] + seq_shift + 1, stamps[-1] + ts_shift + VECTOR_GAP_USEC
    path.write_text("".join(lines), encoding="utf-8")
    return expected


def _config(tmp_path: Path, dump: Path, **extra: Any) -> dict[str, Any]:
    return {
        "host": "node-1",
        "state_dir": str(tmp_path / "state"),
        "batch": {"max_records": 7, "linger_ms": 20},
        "source": {"path": str(dump)},
        "sinks": {"out": {"type": "file", "path": str(tmp_path / "out.ndjson")}},
        **extra,
    }


def _run_to_end(factory: ForwarderFactory, config: dict[str, Any]) -> None:
    forwarder = factory(config).start()
    assert forwarder.process is not None
    assert forwarder.process.wait(timeout=60) == 0, forwarder.stderr_path.read_text()[-2000:]


def _kernel_events(path: Path) -> list[dict[str, Any]]:
    return [event for event in read_ndjson(path) if event["event"] == "kernel_event"]


def _matches(event: dict[str, Any], expected: dict[str, Any]) -> bool:
    """The vectors' judging rule: envelope keys equal, listed fields equal, absent ones absent."""
    keys = ("class", "first_seq", "last_seq", "record_count", "complete")
    if any(event[key] != expected[key] for key in keys):
        return False
    if not _contains(event["fields"], expected["fields"]):
        return False
    if any(name in event["fields"] for name in expected.get("absent_fields", ())):
        return False
    members = event.get("member_seqs", list(range(event["first_seq"], event["last_seq"] + 1)))
    return "member_seqs" not in expected or members == expected["member_seqs"]


def _contains(actual: Any, expected: Any) -> bool:
    """Objects: every expected key present with a contained value; anything else: equal."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in expected.items()
        )
    return bool(actual == expected)


def _assert_exactly(events: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    unmatched = list(events)
    for want in expected:
        found = next((event for event in unmatched if _matches(event, want)), None)
        assert found is not None, f"no event matches {want['class']} at {want['first_seq']}"
        unmatched.remove(found)
    assert unmatched == [], (
        f"unexpected events: {[(e['class'], e['first_seq']) for e in unmatched]}"
    )


def test_every_vector_through_the_forwarder_gives_exactly_its_events(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """All 60 shared vectors in one dump come out of the file sink as exactly their events."""
    expected = _dump(list(VECTORS), tmp_path / "dump")
    _run_to_end(forwarder_factory, _config(tmp_path, tmp_path / "dump"))
    events = _kernel_events(tmp_path / "out.ndjson")
    _assert_exactly(events, expected)
    boot_id = events[0]["boot_id"]
    for event in events:
        assert event["id"] == f"{boot_id}-{event['first_seq']}-{event['class']}"
        assert event["host"] == "node-1"


def test_a_multi_record_report_is_one_event_and_its_records_ship_unchanged(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """An 80-record OOM report is one event with its fields; every record is byte-identical."""
    expected = _dump(["oom_memcg_v1_live_6_18_full_report"], tmp_path / "dump")
    _run_to_end(forwarder_factory, _config(tmp_path, tmp_path / "dump"))
    off = tmp_path / "off"
    off.mkdir()
    _run_to_end(
        forwarder_factory, _config(off, tmp_path / "dump", kernel_events={"enabled": False})
    )
    (event,) = _kernel_events(tmp_path / "out.ndjson")
    _assert_exactly([event], expected)
    assert event["level"] == "err"
    assert event["@timestamp"] == read_ndjson(tmp_path / "out.ndjson")[0]["@timestamp"]
    with_events = read_ndjson(tmp_path / "out.ndjson")
    without = read_ndjson(off / "out.ndjson")
    assert len(without) == 80
    # Each run measures the boot's clock offset anew: all but @timestamp is the same.
    assert [_timeless(e) for e in with_events if e["event"] == "kmsg"] == [
        _timeless(e) for e in without
    ]
    # The event follows the record that completed it (the Killed line, its last member).
    seqs = [e.get("seq") for e in with_events]
    assert with_events.index(event) == seqs.index(event["last_seq"]) + 1


def _timeless(event: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key != "@timestamp"}


def test_a_restart_inside_a_report_gives_the_same_event_once(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """A checkpoint inside a report: the next run completes it; one event, as without the stop."""
    full = tmp_path / "full"
    expected = _dump(["oom_memcg_v1_live_6_18_full_report"], full)
    lines = full.read_text().splitlines(keepends=True)
    dump = tmp_path / "dump"
    dump.write_text("".join(lines[:40]))
    config = _config(tmp_path, dump)
    config["source"]["follow"] = True
    config["kernel_events"] = {"idle_flush_s": 3600}  # only the stop may end the first run
    first = forwarder_factory(config).start()
    wait_until(
        lambda: (checkpoint(tmp_path / "state", "out") or {}).get("seq") == 1039,
        timeout_s=30,
        what="checkpoint at the 40th record, inside the report",
    )
    assert first.stop(signal.SIGTERM) == 0
    assert _kernel_events(tmp_path / "out.ndjson") == []
    dump.write_text("".join(lines))
    config["source"]["follow"] = False
    _run_to_end(forwarder_factory, config)

    reference = tmp_path / "reference"
    reference.mkdir()
    _run_to_end(forwarder_factory, _config(reference, full))
    (event,) = _kernel_events(tmp_path / "out.ndjson")
    _assert_exactly([event], expected)
    (uninterrupted,) = _kernel_events(reference / "out.ndjson")
    # The reference run measured its own clock offset: all but @timestamp is the same.
    assert _timeless(event) == _timeless(uninterrupted)
    first_record = next(e for e in read_ndjson(tmp_path / "out.ndjson") if e["seq"] == 1000)
    assert event["@timestamp"] == first_record["@timestamp"]
    records = [e["seq"] for e in read_ndjson(tmp_path / "out.ndjson") if e["event"] == "kmsg"]
    assert records == list(range(1000, 1080))


def test_a_sink_can_take_only_kernel_events_of_one_class(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """An alerting sink gets only oom_kill events, and its checkpoint still reaches the end."""
    names = ["segfault_live_6_18_with_code_line", "oom_memcg_v1_live_6_18_full_report"]
    expected = _dump(names, tmp_path / "dump")
    config = _config(tmp_path, tmp_path / "dump")
    config["sinks"]["alerts"] = {
        "type": "file",
        "path": str(tmp_path / "alerts.ndjson"),
        "events": ["kernel_event"],
        "kernel_event_classes": ["oom_kill"],
    }
    _run_to_end(forwarder_factory, config)
    alerts = read_ndjson(tmp_path / "alerts.ndjson")
    _assert_exactly(alerts, [e for e in expected if e["class"] == "oom_kill"])
    _assert_exactly(_kernel_events(tmp_path / "out.ndjson"), expected)
    last_seq = max(e["seq"] for e in read_ndjson(tmp_path / "out.ndjson") if e["event"] == "kmsg")
    assert (checkpoint(tmp_path / "state", "alerts") or {})["seq"] == last_seq


def test_a_disabled_class_gives_no_event_and_its_records_still_ship(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """With oom_kill in disabled_classes the OOM report is records only; others still classify."""
    names = ["oom_memcg_v1_live_6_18_full_report", "segfault_live_6_18_with_code_line"]
    expected = _dump(names, tmp_path / "dump")
    config = _config(tmp_path, tmp_path / "dump", kernel_events={"disabled_classes": ["oom_kill"]})
    _run_to_end(forwarder_factory, config)
    _assert_exactly(
        _kernel_events(tmp_path / "out.ndjson"), [e for e in expected if e["class"] != "oom_kill"]
    )
    assert sum(1 for e in read_ndjson(tmp_path / "out.ndjson") if e["event"] == "kmsg") == 82


def test_a_user_rule_turns_one_record_into_an_event_with_its_named_groups(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """A [[kernel_events.rules]] regex makes an event of its class with the named groups as fields."""
    dump = tmp_path / "dump"
    dump.write_text(
        "4,10,1000,-;nfs: server filer-7 not responding, still trying\n"
        "12,11,1001,-;nfs: server spoofed not responding, still trying\n"
        "6,12,1002,-;nfs: server filer-7 OK\n"
    )
    rule = {"class": "nfs_timeout", "regex": r"nfs: server (?P<server>\S+) not responding"}
    _run_to_end(forwarder_factory, _config(tmp_path, dump, kernel_events={"rules": [rule]}))
    (event,) = _kernel_events(tmp_path / "out.ndjson")
    assert event["class"] == "nfs_timeout"
    assert event["fields"] == {"server": "filer-7"}
    assert (event["first_seq"], event["last_seq"], event["complete"]) == (10, 10, True)


def test_kernel_events_are_counted_by_class_and_kind(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """kmsg_forwarder_kernel_events_total counts each event once, with its class and kind."""
    names = ["oom_memcg_v1_live_6_18_full_report", "segfault_live_6_18_with_code_line"]
    _dump(names, tmp_path / "dump")
    config = _config(tmp_path, tmp_path / "dump")
    config["source"]["follow"] = True
    config["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    forwarder = forwarder_factory(config).start()
    forwarder.wait_serving()
    wait_until(lambda: len(_kernel_events(tmp_path / "out.ndjson")) == 2, timeout_s=30)
    name = "kmsg_forwarder_kernel_events_total"
    assert forwarder.metric(name, **{"class": "oom_kill", "kind": "", "severity": ""}) == 1
    segfaults = {"class": "user_fault", "kind": "segfault", "severity": ""}
    assert forwarder.metric(name, **segfaults) == 1
    assert forwarder.stop() == 0


def test_an_open_report_on_a_followed_source_is_flushed_when_records_stop(
    forwarder_factory: ForwarderFactory, tmp_path: Path
) -> None:
    """A report with no end on a live-followed dump comes out (complete: false) once it is quiet."""
    expected = _dump(["warning_truncated_no_end_trace"], tmp_path / "dump")
    config = _config(tmp_path, tmp_path / "dump")
    config["source"]["follow"] = True
    forwarder = forwarder_factory(config).start()
    events = wait_until(lambda: _kernel_events(tmp_path / "out.ndjson"), timeout_s=30)
    _assert_exactly(events, expected)
    assert events[0]["complete"] is False
    assert forwarder.stop() == 0
