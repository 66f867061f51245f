"""Property tests: the fast paths of the classifier and the stage group like the obvious ones."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.kernel_events import KernelEventClassifier
from forwarder.kernel_events.classifier import ReferenceClassifier
from forwarder.source.parser import parse_record
from tests.kernel_events.test_fuzz import KNOWN_LINES

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
    st.sampled_from([1, 1, 1, 120]),  # how many times the record repeats (idle reports)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, max_size=40))
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
