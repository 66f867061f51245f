"""netfilter_log, conntrack_full and link_state (SPEC.md sections 3.17, 3.18, 3.20).

Netfilter LOG (net/netfilter/nf_log_syslog.c) starts with a user-chosen prefix, so it is
recognised by its ``IN=... OUT=... `` layout, every token ending with one space.
Conntrack: net/netfilter/nf_conntrack_core.c. Links: phylib, phylink and the common NIC
drivers' ``netdev_info`` lines.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Final

from forwarder.kernel_events.report import SingleReport
from forwarder.kernel_events.values import Fields
from forwarder.source.parser import Record

_LOG: Final = re.compile(r"(?P<prefix>.*?)IN=(?P<in>\S*) OUT=(?P<out>\S*) (?P<rest>.*)$")
_TOKEN: Final = re.compile(r"\[(?P<inner>.*?)\] |OPT \((?P<opt>[0-9A-F]*)\) |(?P<token>\S+) ")
_INT_KEYS: Final = frozenset(
    {"LEN", "TTL", "ID", "TC", "HOPLIMIT", "FLOWLBL", "SPT", "DPT", "SEQ", "ACK", "WINDOW",
     "URGP", "TYPE", "CODE", "PARAMETER", "MTU", "UID", "GID"}
)  # fmt: skip
_NAMES: Final = {
    "PHYSIN": "phys_in", "PHYSOUT": "phys_out", "MACSRC": "mac_src", "MACDST": "mac_dst",
    "MACPROTO": "ethertype", "TYPE": "icmp_type", "CODE": "icmp_code", "GATEWAY": "gateway",
}  # fmt: skip
_TCP_FLAGS: Final = frozenset({"CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN", "AE"})
_IP_FLAGS: Final = frozenset({"CE", "DF", "MF"})
_CONNTRACK: Final = re.compile(
    r"nf_conntrack: (?:nf_conntrack: )?(?P<what>table full|expectation table full)"
    r"(?: in netns (?P<netns>\d+))?"
)
_LINK_PREFIX: Final = re.compile(
    r"(?P<driver>[\w-]+) (?P<bus_id>\S+) (?P<ifname>[^\s:]+): (?P<msg>.*)$"
)
_LINK_UP: Final = (
    re.compile(r"Link is Up - (?P<speed>[\d.]+[GM]?)bps/(?P<duplex>\w+)(?: \S+)? - flow control "
               r"(?P<flow_control>\S+)"),
    re.compile(r"(?:\w+: \S+ )?NIC Link is Up,? (?P<speed>[\d.]+) ?(?P<unit>[GM])bps,? "
               r"(?:(?P<duplex>\w+) [Dd]uplex)?.*?Flow [Cc]ontrol: (?P<flow_control>.+)$"),
)  # fmt: skip
_LINK_DOWN: Final = ("Link is Down", "NIC Link is Down", "Link down")


class NetfilterLog(SingleReport):
    """netfilter_log: one packet logged by an iptables/nftables LOG rule."""

    class_name = "netfilter_log"


class ConntrackFull(SingleReport):
    """conntrack_full: the connection tracking table dropped a packet."""

    class_name = "conntrack_full"


class LinkState(SingleReport):
    """link_state: a network link went up or down."""

    class_name = "link_state"


def detect_netfilter_log(record: Record, text: str) -> NetfilterLog | None:
    """A LOG line: ``<prefix>IN=<if> OUT=<if> ...`` with every token ending in a space."""
    if not text.endswith(" "):
        return None
    match = _LOG.match(text)
    if match is None:
        return None
    fields: Fields = {"prefix": match["prefix"], "in": match["in"], "out": match["out"]}
    fields.update(parse_packet(match["rest"]))
    return NetfilterLog(record, fields)


def parse_packet(rest: str) -> Fields:
    """The packet part of a LOG line (after ``OUT=``), as fields.

    The usual line (no ICMP inner packet, no options, no whitespace but spaces, a space
    after the last token) is split on spaces instead of matched token by token: the tokens
    of :func:`parse_packet_reference`.
    """
    if not rest.endswith(" ") or "[" in rest or "OPT (" in rest or not rest.isprintable():
        return parse_packet_reference(rest)
    fields: Fields = {}
    after_proto = False
    for token in rest.split():
        after_proto = _take_token(token, fields, after_proto=after_proto)
    return fields


def parse_packet_reference(rest: str) -> Fields:
    """:func:`parse_packet` with the token regex alone."""
    fields: Fields = {}
    after_proto = False
    for match in _TOKEN.finditer(rest):
        if match["inner"] is not None:
            fields["icmp_inner"] = parse_packet(match["inner"] + " ")
        elif match["opt"] is not None:
            fields["tcp_options" if after_proto else "ip_options"] = match["opt"]
        else:
            after_proto = _take_token(match["token"], fields, after_proto=after_proto)
    return fields


def _take_token(token: str, fields: Fields, *, after_proto: bool) -> bool:
    key, equals, value = token.partition("=")
    if not equals:
        if after_proto and key in _TCP_FLAGS:
            fields.setdefault("tcp_flags", []).append(key)
        elif key in _IP_FLAGS:
            fields.setdefault("ip_flags", []).append(key)
        elif key.startswith("FRAG:") and key[5:].isdigit():
            fields["frag"] = int(key[5:])
        return after_proto
    if key == "MAC":
        _take_mac(value, fields)
    elif key in ("SRC", "DST"):
        _take_address(key.lower(), value, fields)
    elif key == "PROTO":
        fields["proto"] = value
        return True
    else:
        name = _name(key, fields, after_proto=after_proto)
        number = key in _INT_KEYS and value.isascii() and value.isdigit()
        fields[name] = int(value) if number else value
    return after_proto


def _name(key: str, fields: Fields, *, after_proto: bool) -> str:
    if after_proto and key == "LEN" and fields.get("proto") == "UDP":
        return "udp_len"
    if after_proto and key in ("ID", "SEQ") and str(fields.get("proto", "")).startswith("ICMP"):
        return "icmp_" + key.lower()
    return _NAMES.get(key, key.lower())


def _take_address(name: str, value: str, fields: Fields) -> None:
    if is_canonical_ipv4(value):  # the usual: ipaddress would give it back unchanged
        fields["ip_version"] = 4
        fields[name] = value
        return
    take_address_reference(name, value, fields)


def is_canonical_ipv4(value: str) -> bool:
    """Whether ``str(ipaddress.ip_address(value))`` is ``value``, an IPv4 address (cheaply)."""
    octets = value.split(".")
    return len(octets) == 4 and all(
        octet.isascii()
        and octet.isdigit()
        and len(octet) <= 3
        and (octet[0] != "0" or octet == "0")
        and int(octet) <= 255
        for octet in octets
    )


def take_address_reference(name: str, value: str, fields: Fields) -> None:
    """An address field the obvious way: validated and normalised by ipaddress."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        fields[name] = value
        return
    fields["ip_version"] = address.version
    fields[name] = str(address)


def _take_mac(value: str, fields: Fields) -> None:
    fields["mac"] = value
    octets = value.split(":")
    if len(octets) == 14:
        fields["mac_dst"] = ":".join(octets[:6])
        fields["mac_src"] = ":".join(octets[6:12])
        fields["ethertype"] = "0x" + "".join(octets[12:])


def detect_conntrack_full(record: Record, text: str) -> ConntrackFull | None:
    """``nf_conntrack: nf_conntrack: table full, dropping packet`` (and the expectation one)."""
    match = _CONNTRACK.match(text)
    if match is None:
        return None
    kind = "table_full" if match["what"] == "table full" else "expectation_table_full"
    fields: Fields = {"kind": kind}
    if match["netns"]:
        fields["netns"] = int(match["netns"])
    return ConntrackFull(record, fields)


def detect_link_state(record: Record, text: str) -> LinkState | None:
    """``<driver> <bus-id> <ifname>: Link is Up/Down ...`` and the NIC drivers' forms."""
    match = _LINK_PREFIX.match(text)
    if match is None:
        return None
    fields: Fields = {k: match[k] for k in ("ifname", "driver", "bus_id")}
    message = match["msg"]
    if message.startswith(_LINK_DOWN):
        return LinkState(record, {**fields, "state": "down"})
    if message == "Link up":
        return LinkState(record, {**fields, "state": "up"})
    for pattern in _LINK_UP:
        up = pattern.match(message)
        if up:
            fields["state"] = "up"
            fields.update(_link_speed(up.groupdict()))
            return LinkState(record, fields)
    return None


def _link_speed(groups: dict[str, Any]) -> Fields:
    fields: Fields = {"flow_control": groups["flow_control"]}
    speed, unit = groups["speed"], groups.get("unit")
    if speed[-1] in "GM":
        speed, unit = speed[:-1], speed[-1]
    try:
        fields["speed_mbps"] = int(float(speed) * (1000 if unit == "G" else 1))
    except ValueError:
        fields["speed"] = groups["speed"]
    if groups.get("duplex"):
        fields["duplex"] = groups["duplex"].lower()
    return fields
