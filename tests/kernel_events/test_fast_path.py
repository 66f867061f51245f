"""Property tests: the fast paths of the classifier and the stage group like the obvious ones."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from forwarder.encoding.reference import Event
from forwarder.kernel_events import KernelEventClassifier
from forwarder.kernel_events.classifier import ReferenceClassifier
from forwarder.kernel_events.envelope import encode_kernel_event
from forwarder.kernel_events.records import parse_for_classification
from forwarder.source.parser import parse_record
from tests.kernel_events.support import raw_records
from tests.kernel_events.test_fuzz import KNOWN_LINES
from tests.kernel_events.test_stage import BOOT, IDENTITY, Harness, _expanded

_EMPTY: MappingProxyType[str, str] = MappingProxyType({})
USB_LINES = [
    "usb {path}: new high-speed USB device number 3 using xhci_hcd",
    "usb {path}: New USB device found, idVendor=046d, idProduct=c52b, bcdDevice=12.03",
    "usb {path}: New USB device strings: Mfr=1, Product=2, SerialNumber=0",
    "usb {path}: Product: USB Receiver",
    "usb {path}: Manufacturer: Logitech",
    "usb {path}: SerialNumber: 1234",
    "usb {path}: USB disconnect, device number 3",
    "usb {path}: reset high-speed USB device number 3 using xhci_hcd",
]
NOISE = ["EXT4-fs (sda1): mounted filesystem r/w with ordered data mode", "random: crng init done"]
texts = st.one_of(
    st.builds(
        lambda line, path: line.format(path=path),
        st.sampled_from(USB_LINES),
        st.sampled_from(["1-1", "1-2", "2-1.4"]),
    ),
    st.sampled_from(NOISE),
    st.sampled_from(KNOWN_LINES),
)
records = st.tuples(
    st.sampled_from([0, 3, 4, 6, 14]),  # kern at various levels, one user record
    st.sampled_from([0, 0, 0, 50, 1_000_000, 2_500_000]),  # ts_usec step
    st.sampled_from(["-", "-", "c"]),
    st.sampled_from([None, None, "T1", "T2"]),
    texts,
    st.sampled_from([1, 1, 1, 70, 120]),  # how many times the record repeats (idle reports)
)
# A USB connect waiting for its product lines, then more than 200 records it cannot take.
IDLE_USB = [
    (6, 50, "-", None, USB_LINES[0].format(path="1-1"), 1),
    (6, 50, "-", None, NOISE[0], 150),
    (6, 0, "-", None, NOISE[1], 100),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=40))
@example(IDLE_USB)
def test_offering_only_what_open_reports_can_take_groups_like_the_reference(
    items: list[tuple[int, int, str, str | None, str, int]],
) -> None:
    """Heads, lazy idle counts and quiet deadlines give the same events at the same seqs."""
    options = {"host": "h", "boot_id": "b", "clock_offset_ns": 0, "clock": lambda: 0.0}
    fast, reference = KernelEventClassifier(**options), ReferenceClassifier(**options)
    seq, ts = 0, 0
    got: list[tuple[object, ...]] = []
    want: list[tuple[object, ...]] = []
    for prefix, step, flags, caller, text, repeat in items:
        for _ in range(repeat):
            seq, ts = seq + 1, ts + step
            header = f"{prefix},{seq},{ts},{flags}" + (f",caller={caller}" if caller else "")
            record = parse_record(header.encode() + b";" + text.encode() + b"\n")
            got.extend((e.to_dict(), e.completed_by_seq) for e in fast.feed(record))
            want.extend((e.to_dict(), e.completed_by_seq) for e in reference.feed(record))
            assert fast.open_reports == reference.open_reports
    got.extend((e.to_dict(), e.completed_by_seq) for e in fast.flush())
    want.extend((e.to_dict(), e.completed_by_seq) for e in reference.flush())
    assert got == want
    assert fast.ambiguous_fragments == reference.ambiguous_fragments


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=30), st.lists(st.integers(1, 400), min_size=1, max_size=4))
@example(IDLE_USB, [64])
def test_the_stage_passing_over_unparsed_records_emits_like_the_reference(
    items: list[tuple[int, int, str, str | None, str, int]], reads: list[int]
) -> None:
    """Records left unparsed while reports are open change no event, position or place.

    The reference feeds every kern record and lets every other record end quiet windows
    (a report closes at the first record past its window, wherever the reads were cut).
    """
    raws = raw_records(items, dictionary_every=3)
    harness = Harness({"out": None})
    reference = ReferenceClassifier(
        host="node-1", boot_id=BOOT, clock_offset_ns=IDENTITY.clock_offset_ns
    )
    got: list[tuple[int, int, bytes]] = []
    want: list[tuple[int, int, bytes]] = []
    start, last, read = 0, -1, 0
    while start < len(raws):
        size = reads[read % len(reads)]
        chunk, start, read = raws[start : start + size], start + size, read + 1
        for item in _expanded(harness.route(chunk, end=start >= len(raws))["out"]):
            if isinstance(item, Event) and item.kind == "kernel_event":
                got.append((last, item.checkpoint_seq, item.json))
            else:
                last = item.checkpoint_seq
        # The reference: every kern record fed; every other record moves time on.
        for raw in chunk:
            record = parse_record(raw)
            closed = (
                reference.feed(record)
                if record.facility_code == 0
                else reference.advance(record.seq, record.ts_usec)
            )
            want.extend(
                (record.seq, record.seq, encode_kernel_event(e, record.seq).json) for e in closed
            )
    last_seq = len(raws)  # seqs run from 1
    want.extend(
        (last_seq, last_seq, encode_kernel_event(e, last_seq).json) for e in reference.flush()
    )
    assert got == want


@settings(max_examples=500, deadline=None)
@given(
    st.integers(0, 191),
    st.integers(0, 2**40),
    st.sampled_from(["", "-", "c", "+", "-,caller=T42", "c,caller=C1,x=y", "-,junk"]),
    st.text(max_size=80),
    st.sampled_from(["", "\n SUBSYSTEM=usb\n DEVICE=c189:1", "\n odd"]),
)
def test_the_classification_parse_matches_the_parser(
    prefix: int, ts_usec: int, rest: str, text: str, dictionary: str
) -> None:
    """Without its dictionary, a record reads the same through both parses."""
    escaped = (
        text.encode("utf-8", "surrogatepass").replace(b"\\", b"\\x5c").replace(b"\n", b"\\x0a")
    )
    raw = f"{prefix},7,{ts_usec},{rest}".encode() + b";" + escaped + dictionary.encode() + b"\n"
    full = parse_record(raw)
    cheap = parse_for_classification(raw, full.facility_code << 3 | full.level_code, 7, ts_usec)
    assert cheap is not None
    assert cheap == replace(full, subsystem=None, device=None, fields=_EMPTY)
