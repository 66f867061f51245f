"""Model test: a lagging sink's kernel events, split between its catch-up and the live path.

The stream is the shared vectors' real reports, renumbered into one boot, with filler records
and quiet gaps between them. The reference is one live stage that read everything (what the
sink would have got had it never lagged). A sink lagging at start with checkpoint ``C`` while
the spool held everything up to ``T`` gets the events of its catch-up (``(C, T]``, classified
from the spool) and of the live stage (above ``T``, and a report still open at ``T``): together
exactly the reference's, none twice, whatever the read windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.delivery.checkpoint import Checkpoint
from forwarder.encoding.chunk import ChunkEncoder
from forwarder.encoding.reference import Event, Identity, encode_record
from forwarder.kernel_events.config import KernelEventsConfig
from forwarder.kernel_events.stage import KernelEventStage
from forwarder.routing import Item, Router
from forwarder.spool.catch_up import SinkCatchUp
from forwarder.spool.config import SpoolConfig
from forwarder.spool.spool import Spool
from forwarder.telemetry.events import Emitter
from tests.kernel_events.test_vectors import VECTORS

BOOT = "boot-a"
IDENTITY = Identity("node-1", BOOT, 1_700_000_000_000_000_000)
REPORTS = [vector["records"] for vector in VECTORS if vector["records"]]

pytestmark = pytest.mark.skipif(not REPORTS, reason="../shared/kernel-events/vectors.json missing")


def _stream(parts: list[tuple[int, int, int]]) -> list[bytes]:
    """(report index, fillers after it, quiet usec after it) -> raw records, seqs from 0."""
    raws: list[bytes] = []
    ts = 1_000_000
    for report, fillers, quiet in parts:
        records = REPORTS[report % len(REPORTS)]
        first_ts = int(records[0].split(",", 3)[2])
        for raw in records:
            header, _, rest = raw.partition(";")
            fields = header.split(",")
            fields[1] = str(len(raws))
            fields[2] = str(ts + int(fields[2]) - first_ts)
            raws.append(f"{','.join(fields)};{rest}".encode())
        ts = int(raws[-1].split(b",", 3)[2]) + 10
        for _ in range(fillers):
            prefix = 14 if len(raws) % 2 else 6  # user and kern records that open nothing
            raws.append(f"{prefix},{len(raws)},{ts},-;filler record {len(raws)}\n".encode())
            ts += 10
        ts += quiet
    return raws


def _windows(raws: list[bytes], sizes: list[int]) -> list[list[bytes]]:
    out, at, turn = [], 0, 0
    while at < len(raws):
        size = sizes[turn % len(sizes)]
        out.append(raws[at : at + size])
        at, turn = at + size, turn + 1
    return out


def _live_events(
    raws: list[bytes], sizes: list[int], resume: int, spooled_through: dict[str, int] | None
) -> list[Event]:
    """Kernel events a live stage reading every record gives the sink (idle flush at the end)."""
    stage = KernelEventStage(
        KernelEventsConfig(), IDENTITY, {"web": resume}, {}, Emitter(None),
        spooled_through=spooled_through,
    )  # fmt: skip
    router = Router(
        IDENTITY,
        {"web": Checkpoint(BOOT, resume, IDENTITY.clock_offset_ns)},
        min_level=7,
        now_ns=lambda: 0,
    )
    encoder = ChunkEncoder(IDENTITY)
    out: dict[str, list[Item]] = {"web": []}
    for window in _windows(raws, sizes):
        chunk = encoder.encode(window, lambda _raw, _error: None, lambda *_args: None)
        stage.route(chunk, window, router, out, end=False)
    stage.flush(out)
    return [item for item in out["web"] if isinstance(item, Event) and item.kind == "kernel_event"]


def _catch_up_events(spool: Spool, position: int, through: int, read: int) -> list[Event]:
    live = KernelEventStage(KernelEventsConfig(), IDENTITY, {"web": None}, {}, Emitter(None))
    catch_up = SinkCatchUp(
        "web",
        spool,
        (BOOT, position),
        identity_of=lambda _boot_id: IDENTITY,
        encode=encode_record,
        min_level=7,
        on_parse_error=lambda _raw, _error: None,
        on_failure=lambda _raw, _error, _seq: None,
        events_for=live.for_sink,
        classify_through=(BOOT, through),
    )
    items: list[Item] = []
    while (more := catch_up.next_items(read)) is not None:
        items.extend(more)
    return [item for item in items if isinstance(item, Event) and item.kind == "kernel_event"]


def _key(event: Event) -> tuple[str, int, str]:
    return (event.id, event.checkpoint_seq, json.dumps(json.loads(event.json), sort_keys=True))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 6), st.sampled_from([0, 50, 2_500_000])),
        min_size=1,
        max_size=6,
    ),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    cut=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    read=st.integers(1, 64),
)
def test_catch_up_and_live_path_together_give_each_kernel_event_once(
    tmp_path_factory: pytest.TempPathFactory,
    parts: list[tuple[int, int, int]],
    sizes: list[int],
    cut: tuple[float, float],
    read: int,
) -> None:
    """Every reference event exactly once, from whichever side its position says."""
    raws = _stream(parts)
    last = len(raws) - 1
    position = round(cut[0] * last) - 1  # the sink's checkpoint: -1 .. last - 1
    through = position + round(cut[1] * (last - position))  # the spool's newest at start
    directory: Path = tmp_path_factory.mktemp("spool")
    spool = Spool(SpoolConfig(), directory)
    spool.open(BOOT, IDENTITY.clock_offset_ns)
    spool.append(list(range(len(raws))), raws)

    reference = _live_events(raws, sizes, position, None)
    from_spool = _catch_up_events(spool, position, through, read)
    live = _live_events(raws, sizes, position, {"web": through})
    spool.close()

    assert all(event.checkpoint_seq <= through for event in from_spool)
    assert sorted(map(_key, from_spool + live)) == sorted(map(_key, reference))
