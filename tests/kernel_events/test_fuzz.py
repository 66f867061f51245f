"""Property tests: no sequence of parsed records makes the classifier raise."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.kernel_events import KernelEventClassifier
from forwarder.kernel_events.catalogue import detect, detect_reference
from forwarder.source.parser import parse_record
from tests.kernel_events.test_vectors import VECTORS

# Lines of real reports, so the fuzzer walks deep into the grammars, plus anything.
KNOWN_LINES = sorted(
    {raw.partition(";")[2].split("\n")[0] for vector in VECTORS for raw in vector["records"]}
)
texts = st.one_of(
    st.sampled_from(KNOWN_LINES),
    st.text(max_size=120),
    st.builds(
        lambda a, b: a[: len(a) // 2] + b, st.sampled_from(KNOWN_LINES), st.text(max_size=40)
    ),
    # One character of a real line replaced: digits become letters, separators vanish.
    st.builds(
        lambda line, at, char: (
            line[: at % (len(line) + 1)] + char + line[at % (len(line) + 1) + 1 :]
        ),
        st.sampled_from(KNOWN_LINES),
        st.integers(0, 400),
        st.characters(),
    ),
)
records = st.builds(
    lambda prefix, ts, flags, caller, text: (prefix, ts, flags, caller, text),
    st.integers(0, 191),
    st.integers(0, 10**12),
    st.sampled_from(["-", "c", "+"]),
    st.sampled_from([None, "T1", "T2", "C0"]),
    texts,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=60))
def test_any_record_sequence_never_raises(
    items: list[tuple[int, int, str, str | None, str]],
) -> None:
    """Feeding, flushing and idle-flushing arbitrary records only ever returns events."""
    classifier = KernelEventClassifier(host="h", boot_id="b", clock_offset_ns=0)
    seen = set()
    for seq, (prefix, ts, flags, caller, text) in enumerate(items, start=1):
        header = f"{prefix},{seq},{ts},{flags}" + (f",caller={caller}" if caller else "")
        escaped = text.encode("utf-8", "surrogatepass").replace(b"\n", b"\\x0a")
        record = parse_record(header.encode() + b";" + escaped + b"\n")
        for event in classifier.feed(record):
            document = event.to_dict()
            assert document["id"] not in seen
            seen.add(document["id"])
    classifier.flush_idle(1e12)
    for event in classifier.flush():
        assert event.to_dict()["record_count"] >= 1
    assert classifier.open_reports == 0


@settings(max_examples=500, deadline=None)
@given(texts, st.integers(0, 7))
def test_guarded_detection_matches_the_reference(text: str, level: int) -> None:
    """The prefix/substring guard never hides a report that some detector would open."""
    record = parse_record(f"{level},1,1,-;".encode() + text.encode("utf-8", "surrogatepass"))
    fast, reference = detect(record, record.message), detect_reference(record, record.message)
    assert (fast is None) == (reference is None)
    if fast is not None and reference is not None:
        assert (fast.class_name, fast.fields) == (reference.class_name, reference.fields)
