"""The netfilter detector's IPv4 shortcut gives the fields ipaddress gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.kernel_events.network import _take_address, take_address_reference

octets = st.one_of(
    st.integers(0, 300).map(str),
    st.sampled_from(["00", "01", "007", "0255", "", " 1", "1 ", "٣", "+1", "0x1", "1e2"]),
)
addresses = st.one_of(
    st.lists(octets, min_size=3, max_size=5).map(".".join),
    st.sampled_from(["::1", "fe80::1", "2001:db8::0:1", "::ffff:10.0.0.1", "10.0.0.1%eth0", ""]),
    st.text(alphabet="0123456789.:af", max_size=16),
)


@settings(max_examples=2000)
@given(addresses)
def test_an_address_field_is_the_one_ipaddress_gives(value: str) -> None:
    """Canonical IPv4, leading zeros, big octets, IPv6, junk: the same fields either way."""
    fast: dict[str, object] = {}
    reference: dict[str, object] = {}
    _take_address("src", value, fast)
    take_address_reference("src", value, reference)
    assert fast == reference
