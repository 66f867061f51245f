"""Cost of the kernel-event classifier per kern record, on a realistic mix.

The mix is mostly records that start nothing (driver chatter, bridge port states,
mounts, ACPI and USB noise), with every shared vector's records spliced in at intervals
(about 5% of records belong to a report). Prints microseconds per record for the
classifier alone and, for scale, for parse_record.

    .venv/bin/python bench/kernel_events_bench.py [records]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from forwarder.kernel_events import KernelEventClassifier
from forwarder.source.parser import Record, parse_record

VECTORS = Path(__file__).resolve().parents[1] / ".." / "shared" / "kernel-events" / "vectors.json"
NOISE = [
    "6,{seq},{ts},-;kevbr0: port 1(kevv0) entered forwarding state",
    "6,{seq},{ts},-;EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
    "6,{seq},{ts},-;IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
    "4,{seq},{ts},-;ACPI BIOS Error (bug): Could not resolve symbol [\\x5c_SB.PC00], AE_NOT_FOUND",
    "6,{seq},{ts},-;usb 1-1: Product: USB Receiver\n SUBSYSTEM=usb\n DEVICE=c189:1",
    "5,{seq},{ts},-;random: crng init done",
    "6,{seq},{ts},-;device veth1a2b3c entered promiscuous mode",
    "6,{seq},{ts},-;overlayfs: upper fs does not support tmpfile.",
    "4,{seq},{ts},-;TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies.",
    "6,{seq},{ts},-;cni0: port 3(veth9f8e7d) entered blocking state",
    "6,{seq},{ts},-;IPVS: rr: TCP 10.96.0.1:443 - no destination available",
    "3,{seq},{ts},-;systemd-journald[312]: File /var/log/journal/x.journal corrupted",
]


def build_mix(total: int) -> list[Record]:
    """Noise records with the vectors' reports spliced in, in seq and ts order."""
    reports = [
        [raw.partition(";")[2] for raw in vector["records"]]
        for vector in json.loads(VECTORS.read_text())["vectors"]
    ]
    records: list[Record] = []
    seq, ts, report_index = 1, 1_000_000, 0
    while len(records) < total:
        if seq % 400 == 0:
            for body in reports[report_index % len(reports)]:
                records.append(parse_record(f"4,{seq},{ts},-;{body}".encode()))
                seq, ts = seq + 1, ts + 20
            report_index += 1
            ts += 3_000_000
            continue
        line = NOISE[seq % len(NOISE)].format(seq=seq, ts=ts)
        records.append(parse_record((line + "\n").encode()))
        seq, ts = seq + 1, ts + 500
    return records[:total]


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    records = build_mix(total)
    raws = [
        f"{r.facility_code * 8 + r.level_code},{r.seq},{r.ts_usec},-;{r.message}\n".encode()
        for r in records[:50_000]
    ]
    best = float("inf")
    events = 0
    for _ in range(3):
        classifier = KernelEventClassifier(host="h", boot_id="b", clock_offset_ns=0)
        started = time.perf_counter()
        events = 0
        for record in records:
            events += len(classifier.feed(record))
        events += len(classifier.flush())
        best = min(best, time.perf_counter() - started)
    noise = [r for r in records if r.seq % 400 > 100]
    classifier = KernelEventClassifier(host="h", boot_id="b", clock_offset_ns=0)
    started = time.perf_counter()
    for record in noise:
        classifier.feed(record)
    noise_us = (time.perf_counter() - started) / len(noise) * 1e6
    started = time.perf_counter()
    for raw in raws:
        parse_record(raw)
    parse_us = (time.perf_counter() - started) / len(raws) * 1e6
    in_reports = sum(1 for r in records if r.level_code == 4 and r.seq % 400 < 100) / total
    print(f"records={total} events={events} (~{in_reports:.0%} of records near reports)")
    print(f"classifier: {best / total * 1e6:.2f} us/record (best of 3)")
    print(f"classifier, records that start nothing only: {noise_us:.2f} us/record")
    print(f"parse_record, for scale: {parse_us:.2f} us/record")


if __name__ == "__main__":
    main()
