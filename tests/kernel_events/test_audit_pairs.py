"""The audit detector's one-pass pair split gives the values of the obvious split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.kernel_events.audit import audit_pairs, audit_pairs_reference

pieces = st.sampled_from(
    ['comm="a b"', "comm=414243", "exe=2F62696E", "k=", 'z=""', 'q="open', "x=4G", "name=AB",
     'apparmor="DENIED"', "pid=42", " ", '"', "=", "key=a=b", "data=4142 43"]
)  # fmt: skip
bodies = st.one_of(
    st.lists(pieces, max_size=8).map(" ".join),
    st.text(alphabet='ab=" 0F\t-_', max_size=30),
    st.text(max_size=40),
)


@settings(max_examples=1000)
@given(bodies)
def test_the_pairs_of_any_body_are_those_of_the_reference(body: str) -> None:
    """Quoted, unquoted, hex-encoded, empty and unclosed values come out the same."""
    assert audit_pairs(body) == audit_pairs_reference(body)
