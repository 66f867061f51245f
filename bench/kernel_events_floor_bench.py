"""The least Python work one kernel event needs here, beside issue 9's +10% budget.

    .venv/bin/python bench/kernel_events_floor_bench.py [--off-us-per-record 6.0] [--number N]

For a netfilter LOG record and an audit record (the core bench's apparmor line), times, best
of 7 (a shared machine only ever adds time):

- the floor: hand-written straight-line code that takes the record's text, extracts the
  fields the spec requires (asserted equal to what the forwarder's detector gives), writes
  the event's JSON line from a bytes template and orjson for the fields, and appends it;
  no grouping, no report object, no checks for other classes: less than any general
  classifier can do;
- the floor's pieces alone, and single builtins for scale (one ``re.findall`` over the
  line, one ``str.split``);
- what the forwarder spends today on the same record (classification parse, ``detect``,
  the report and its KernelEvent, the event's bytes), the stage's route and sinks aside.

The budget is 10% of a record's CPU with kernel events off (``--off-us-per-record``, from
``bench/kernel_events_cost_bench.py``'s "off" figure) times 2: the core bench's dump has
one event per two records.
"""

from __future__ import annotations

import argparse
import re
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from forwarder.kernel_events.catalogue import detect
from forwarder.kernel_events.classifier import KernelEventClassifier
from forwarder.kernel_events.envelope import encode_kernel_event
from forwarder.kernel_events.records import parse_for_classification

BOOT = "5b1e7c1a-2f4d-4c1e-9a7b-3d2e1f0a9b8c"
NETFILTER = (
    b"4,6,5000300,-;[fw-drop] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "
    b"SRC=10.0.6.6 DST=10.0.0.1 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=47514 DF PROTO=TCP "
    b"SPT=1030 DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0 \n"
)
AUDIT = (
    b'5,9,5000450,-;audit: type=1400 audit(71271.1033:9): apparmor="DENIED" operation="open" '
    b'profile="snap" name="/proc/1033/mounts"\n'
)
TEMPLATE = (
    b'{"event":"kernel_event","class":"%b","id":"' + BOOT.encode() + b'-%d-%b","host":"node",'
    b'"boot_id":"' + BOOT.encode() + b'","first_seq":%d,"last_seq":%d,"record_count":1,'
    b'"complete":true,"@timestamp":"%b","level":"%b","fields":%b}'
)
STAMP = b"2026-09-21T14:13:25.000300Z"  # a cached second plus the microseconds: given
INTS = frozenset({"LEN", "TTL", "ID", "SPT", "DPT", "WINDOW", "URGP"})
AUDIT_HEAD = re.compile(r"audit: type=(\d+) audit\((\d+\.\d+):(\d+)\): ")
PAIR = re.compile(r'([\w-]+)=(?:"([^"]*)"|(\S*))')
TOKEN = re.compile(r"(\S+) ")


def text_of(raw: bytes) -> str:
    """The record's text: what any classification must read."""
    return raw[raw.index(b";") + 1 : -1].decode()


def netfilter_fields(text: str) -> dict[str, Any]:
    """This line's spec fields with the least work (no IPv6, ICMP or option forms)."""
    prefix, _, rest = text.partition("IN=")
    interface, _, rest = rest.partition(" OUT=")
    out, _, rest = rest.partition(" ")
    fields: dict[str, Any] = {"prefix": prefix, "in": interface, "out": out}
    after_proto = False
    for token in rest.split():
        key, equals, value = token.partition("=")
        if not equals:
            fields.setdefault("tcp_flags" if after_proto else "ip_flags", []).append(key)
        elif key == "MAC":
            fields.update(mac=value, mac_dst=value[:17], mac_src=value[18:35])
            fields["ethertype"] = "0x" + value[36:].replace(":", "")
        elif key == "SRC":
            fields.update(ip_version=4, src=value)
        else:
            after_proto = after_proto or key == "PROTO"
            fields[key.lower()] = int(value) if key in INTS else value
    return fields


def audit_fields(text: str) -> dict[str, Any]:
    """This line's spec fields with the least work (quoted values, no hex, AppArmor)."""
    head = AUDIT_HEAD.match(text)
    assert head is not None
    pairs = {key: quoted or bare for key, quoted, bare in PAIR.findall(text, head.end())}
    return {
        "audit_type": int(head[1]),
        "audit_time": head[2],
        "audit_serial": int(head[3]),
        "lsm": "apparmor",
        "outcome": pairs["apparmor"],
        "fields": pairs,
    }


def floor(case: Case) -> list[bytes]:
    """The whole floor for one record: text, fields, JSON line, appended."""
    out: list[bytes] = []
    out.append(json_line(case, case.extract(text_of(case.raw))))
    return out


def today(raw: bytes) -> bytes:
    """The forwarder's own work on the record (stage routing and sinks left out)."""
    prefix, seq = int(raw[:1]), int(raw.split(b",")[1])
    classifier = KERNEL_EVENTS
    record = parse_for_classification(raw, prefix, seq, 5_000_300)
    assert record is not None
    events = classifier.feed(record)
    return encode_kernel_event(events[0], seq).json


KERNEL_EVENTS = KernelEventClassifier(host="node", boot_id=BOOT, clock_offset_ns=0)


def best_us(call: Callable[[], object], number: int) -> float:
    """Best of 7 runs of ``number`` calls, µs per call."""
    return min(timeit.repeat(call, number=number, repeat=7)) / number * 1e6


@dataclass(frozen=True)
class Case:
    """One record, its class, its least-work extraction and the fields it gives."""

    raw: bytes
    class_name: bytes
    extract: Callable[[str], dict[str, Any]]

    @property
    def text(self) -> str:
        """The record's text."""
        return text_of(self.raw)

    @property
    def fields(self) -> dict[str, Any]:
        """Its fields, asserted equal to the forwarder detector's."""
        record = parse_for_classification(self.raw, int(self.raw[:1]), 6, 5_000_300)
        assert record is not None
        report = detect(record, record.message)
        assert report is not None
        fields = self.extract(self.text)
        assert fields == report.fields, (fields, report.fields)
        return fields


def json_line(case: Case, fields: dict[str, Any]) -> bytes:
    """The event's JSON line from the template and orjson."""
    name = case.class_name
    return TEMPLATE % (name, 6, name, 6, 6, STAMP, b"notice", orjson.dumps(fields))


ROWS: list[tuple[str, Callable[[Case, str, dict[str, Any]], object]]] = [
    ("the record's text (partition + decode)", lambda case, _, __: text_of(case.raw)),
    ("its fields, least work", lambda case, text, _: case.extract(text)),
    ("one re.findall over the text", lambda _, text, __: TOKEN.findall(text)),
    ("one str.split of the text", lambda _, text, __: text.split()),
    ("its JSON line (template + orjson of the fields)", lambda case, _, f: json_line(case, f)),
    ("**floor: all of it, appended**", lambda case, _, __: floor(case)),
    ("today: parse + classify + event bytes", lambda case, _, __: today(case.raw)),
]


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--off-us-per-record", type=float, default=6.0)
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    budget = args.off_us_per_record * 0.10 * 2
    cases = (
        Case(NETFILTER, b"netfilter_log", netfilter_fields),
        Case(AUDIT, b"audit", audit_fields),
    )
    print(f"budget: 10% of {args.off_us_per_record:.1f} µs per record x 2 = {budget:.2f} µs/event")
    print("| µs per event | netfilter LOG | audit (AppArmor) |")
    print("|---|---|---|")
    for label, work in ROWS:
        cells = []
        for case in cases:
            text, fields = case.text, case.fields

            def call(work: Callable[..., object] = work, case: Case = case) -> object:
                return work(case, text, fields)  # noqa: B023 - called in this iteration

            cells.append(f"{best_us(call, args.number):.2f}")
        print(f"| {label} | {' | '.join(cells)} |")
    print(f"| **budget** | {budget:.2f} | {budget:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
