"""The raw-bytes screen that spares parsing: it never hides a record that opens a report."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.kernel_events.catalogue import detect, might_open, might_open_at
from forwarder.source.parser import parse_record
from tests.kernel_events.test_fuzz import texts
from tests.kernel_events.test_vectors import VECTORS


def _escaped(text: str) -> str:
    """The text as the kernel writes it: bytes below 0x20, DEL and the backslash escaped."""
    return "".join(
        f"\\x{ord(char):02x}" if ord(char) < 0x20 or ord(char) == 0x7F or char == "\\" else char
        for char in text
    )


def test_every_vector_record_that_opens_a_report_passes_the_screen() -> None:
    """Each raw record of the shared vectors that detect() opens a report on is let through."""
    opened = 0
    for vector in VECTORS:
        for raw_text in vector["records"]:
            raw = raw_text.encode()
            record = parse_record(raw)
            if detect(record, record.message) is not None:
                opened += 1
                assert might_open(raw), raw_text
    assert opened > 60


@settings(max_examples=1000)
@given(texts, st.sampled_from(["-", "c"]), st.integers(0, 7))
def test_the_screen_lets_through_whatever_detect_would_open(
    text: str, flags: str, level: int
) -> None:
    """might_open(raw) is False only where detect() on the parsed record finds nothing."""
    raw = f"{level},1,1000,{flags};{_escaped(text)}\n".encode(errors="surrogatepass")
    record = parse_record(raw)
    if detect(record, record.message) is not None:
        assert might_open(raw)


@given(st.lists(st.tuples(texts, st.integers(0, 191)), max_size=30))
def test_the_window_search_finds_every_record_the_screen_lets_through(
    items: list[tuple[str, int]],
) -> None:
    """might_open_at over a window finds at least each index might_open accepts."""
    raws = [
        f"{prefix},{i},1000,-;{_escaped(text)}\n".encode(errors="surrogatepass")
        for i, (text, prefix) in enumerate(items)
    ]
    found = might_open_at(raws)
    assert found <= set(range(len(raws)))
    assert {i for i, raw in enumerate(raws) if might_open(raw)} <= found


def test_common_chatter_with_a_report_prefix_is_screened_out() -> None:
    """ext4 mount lines and USB product lines share a prefix with reports but are not parsed."""
    chatter = [
        b"6,1,1,-;EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.\n",
        b"6,2,2,-;usb 1-1: Product: USB Receiver\n SUBSYSTEM=usb\n DEVICE=c189:1\n",
        b"6,3,3,-;kevbr0: port 1(kevv0) entered forwarding state\n",
    ]
    assert not any(might_open(raw) for raw in chatter)
    assert might_open_at(chatter) == set()


def test_a_line_with_out_equals_but_no_trailing_space_is_screened_out() -> None:
    """A netfilter LOG line ends with a space; one without it (the core bench's) is not parsed."""
    log = b"4,1,1,-;[fw-drop] IN=eth0 OUT= MAC= SRC=10.0.0.2 DST=10.0.0.1 PROTO=TCP SYN "
    cut = log.rstrip(b" ")
    dictionary = b"\n SUBSYSTEM=net\n DEVICE=n2\n"
    assert might_open(log + b"\n")
    assert might_open(log + dictionary)
    assert not might_open(cut + b"\n")
    assert not might_open(cut + dictionary)
    assert might_open_at([cut + b"\n", log + dictionary, cut + dictionary]) == {1}
