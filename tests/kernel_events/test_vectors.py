"""Every shared vector of ../shared/kernel-events/vectors.json, judged by its own rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from forwarder.kernel_events import KernelEventClassifier
from forwarder.source.parser import parse_record

VECTORS_PATH = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "kernel-events" / "vectors.json"
)


def _load_vectors() -> list[dict[str, Any]]:
    if not VECTORS_PATH.is_file():
        return []
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]


VECTORS = _load_vectors()


def classify(raw_records: list[str]) -> list[dict[str, Any]]:
    """Feed raw records to a fresh classifier, flush, return the event objects."""
    classifier = KernelEventClassifier(host="node-1", boot_id="b00t", clock_offset_ns=0)
    events = []
    for raw in raw_records:
        events.extend(classifier.feed(parse_record(raw.encode())))
    events.extend(classifier.flush())
    return [event.to_dict() for event in events]


def fields_match(emitted: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Every expected key present with an equal value; nested objects compared the same way."""
    for name, value in expected.items():
        if name not in emitted:
            return False
        got = emitted[name]
        if isinstance(value, dict):
            if not (isinstance(got, dict) and fields_match(got, value)):
                return False
        elif got != value:
            return False
    return True


def matches(emitted: dict[str, Any], expected: dict[str, Any]) -> bool:
    """The judging block's matching rule."""
    for key in ("class", "first_seq", "last_seq", "record_count", "complete"):
        if emitted[key] != expected[key]:
            return False
    fields = emitted["fields"]
    if not fields_match(fields, expected.get("fields", {})):
        return False
    if any(name in fields for name in expected.get("absent_fields", ())):
        return False
    if "member_seqs" in expected:
        members = emitted.get(
            "member_seqs", list(range(emitted["first_seq"], emitted["last_seq"] + 1))
        )
        if members != expected["member_seqs"]:
            return False
    return True


def test_vectors_file_is_present() -> None:
    """The shared vectors must be found beside the clone: a missing file fails, never skips."""
    assert VECTORS_PATH.is_file(), f"vectors not found at {VECTORS_PATH}"
    assert len(VECTORS) >= 60


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    """The classifier emits exactly the vector's expected events, in any order."""
    emitted = classify(vector["records"])
    expected = vector["expect"]["events"]
    unmatched = list(emitted)
    missing = []
    for want in expected:
        found = next((event for event in unmatched if matches(event, want)), None)
        if found is None:
            missing.append(want)
        else:
            unmatched.remove(found)
    assert not missing, {"missing": missing, "emitted": emitted}
    assert not unmatched, {"unexpected": unmatched}
