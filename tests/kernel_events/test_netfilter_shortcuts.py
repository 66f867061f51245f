"""The netfilter detector's shortcuts (IPv4 addresses, packets split on spaces) change no field."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.kernel_events.network import (
    _take_address,
    parse_packet,
    parse_packet_reference,
    take_address_reference,
)

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


tokens = st.sampled_from(
    ["MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00", "SRC=10.0.0.1", "DST=fe80::1", "LEN=60",
     "TTL=64", "ID=7", "DF", "MF", "CE", "PROTO=TCP", "PROTO=UDP", "PROTO=ICMP", "SPT=22",
     "DPT=80", "SEQ=1", "ACK=2", "WINDOW=64240", "SYN", "ACK", "FIN", "URGP=0", "FRAG:12",
     "TYPE=8", "CODE=0", "MARK=0x1", "UID=0", "GID=0", "OPT (0204)", "[SRC=1.2.3.4 LEN=5 ]",
     "PHYSIN=eth1", "X=", "=", "LEN=x", "\t", "\xa0", " ", "é=1"]
)  # fmt: skip
packets = st.one_of(
    st.lists(tokens, max_size=14).map(lambda parts: " ".join(parts) + " "),
    st.lists(tokens, max_size=8).map(" ".join),
    st.text(alphabet="AB= .:[]()0\t", max_size=30),
)


@settings(max_examples=2000)
@given(packets)
def test_a_packet_split_on_spaces_gives_the_token_regexs_fields(rest: str) -> None:
    """Any packet part, usual or not (options, ICMP inner, tabs, no final space): same fields."""
    assert parse_packet(rest) == parse_packet_reference(rest)
