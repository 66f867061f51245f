"""The event's bytes from a template are those of orjson over the event's dictionary."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.kernel_events.envelope import encode_kernel_event, encode_kernel_event_reference
from forwarder.kernel_events.model import KernelEvent

names = st.text(min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
events = st.builds(
    KernelEvent,
    class_name=names,
    host=names,
    boot_id=names,
    member_seqs=st.lists(st.integers(0, 2**40), min_size=1, max_size=6, unique=True).map(
        lambda seqs: tuple(sorted(seqs))
    ),
    complete=st.booleans(),
    timestamp_ns=st.integers(0, 4_000_000_000 * 10**9),
    level_code=st.integers(0, 7),
    fields=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    completed_by_seq=st.integers(0, 2**40),
)


@settings(max_examples=400, deadline=None)
@given(events, st.integers(0, 2**40))
def test_the_template_writes_the_events_json_byte_for_byte(
    event: KernelEvent, position: int
) -> None:
    """Any class, host, boot, members (contiguous or not), level and fields: the same Event."""
    assert encode_kernel_event(event, position) == encode_kernel_event_reference(event, position)


def test_a_percent_sign_or_a_quote_in_the_constants_stays_literal() -> None:
    """The template escapes ``%`` in the host and JSON-escapes quotes, like orjson does."""
    event = KernelEvent(
        "rule%d", 'h"%s', "b%", (7, 9), complete=True, timestamp_ns=0, level_code=3,
        fields={"k": "%b"}, completed_by_seq=9,
    )  # fmt: skip
    encoded = encode_kernel_event(event, 9)
    assert encoded == encode_kernel_event_reference(event, 9)
    assert b'"id":"b%-7-rule%d"' in encoded.json
    assert b'"member_seqs":[7,9]' in encoded.json
