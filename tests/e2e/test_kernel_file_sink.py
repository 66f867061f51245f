"""End to end on the real kernel: /dev/kmsg -> forwarder subprocess -> file sink.

Covers the foundation's delivery contract: exactly-once output of injected records,
kernel-made records (iptables LOG), restart after SIGTERM and SIGKILL, overflow gaps,
reboot detection, and min_level filtering that still moves the checkpoint.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from forwarder.source.ring import ring_bounds
from tests.conftest import ForwarderFactory
from tests.support.forwarder import (
    checkpoint,
    free_port,
    iter_gaps,
    read_ndjson,
    records_with_tag,
)
from tests.support.kernel import KMSG, inject, requires_kernel, unique_tag
from tests.support.wait import wait_until

pytestmark = [requires_kernel, pytest.mark.kernel, pytest.mark.timeout(120)]  # restarts


def _out(config: dict[str, Any]) -> Path:
    return Path(config["sinks"]["out"]["path"])


def _wait_for_tagged(config: dict[str, Any], tag: str, count: int) -> list[dict[str, Any]]:
    def arrived() -> list[dict[str, Any]]:
        found = records_with_tag(read_ndjson(_out(config)), tag)
        return found if len({r["seq"] for r in found}) >= count else []

    return wait_until(arrived, timeout_s=30)


def test_injected_records_arrive_exactly_once_with_level_facility_and_text(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any]
) -> None:
    """Tagged records written to /dev/kmsg come out of the file sink once each, intact, in order."""
    # One batch in flight: the receiver gets batches in seq order (README, Delivery guarantee).
    file_sink_config["batch"] = {**file_sink_config["batch"], "max_in_flight": 1}
    forwarder = forwarder_factory(file_sink_config).start()
    forwarder.wait_serving()
    tag = unique_tag()
    priorities = {"err": 11, "warning": 12, "notice": 13, "info": 14, "debug": 15}
    messages = [
        (f"{tag} {level} #{index} caf\u00e9 back\\slash", level, priority)
        for index in range(6)
        for level, priority in priorities.items()
    ]
    for text, _, priority in messages:
        inject([text], priority=priority)
    received = _wait_for_tagged(file_sink_config, tag, len(messages))
    assert forwarder.stop() == 0

    received = records_with_tag(read_ndjson(_out(file_sink_config)), tag)
    assert len(received) == len(messages)
    by_text = {record["message"]: record for record in received}
    for text, level, _ in messages:
        record = by_text[text]
        assert record["facility"] == "user"
        assert record["facility_code"] == 1
        assert record["level"] == level
        assert record["id"] == f"{record['boot_id']}-{record['seq']}"
    seqs = [record["seq"] for record in received]
    assert seqs == sorted(seqs)
    assert forwarder.stderr_lines()[-1]["event"] == "stopped"


@pytest.fixture
def iptables_log_rule() -> Any:
    """An iptables LOG rule for one loopback UDP port, always deleted afterwards."""
    port = free_port()
    tag = unique_tag("ipt")
    rule = [
        "OUTPUT", "-o", "lo", "-p", "udp", "-s", "127.0.0.1", "-d", "127.0.0.1",
        "--dport", str(port), "-j", "LOG", "--log-prefix", f"[{tag}] ",
    ]  # fmt: skip
    try:
        subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
    except (FileNotFoundError, subprocess.CalledProcessError) as error:
        pytest.fail(f"cannot add the iptables LOG rule (make test installs iptables): {error}")
    try:
        yield port, tag
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True, capture_output=True)


def test_kernel_made_iptables_records_arrive_as_kern_warning(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any], iptables_log_rule: Any
) -> None:
    """Packets hitting an iptables LOG rule make kernel records that arrive as kern.warning."""
    port, tag = iptables_log_rule
    forwarder = forwarder_factory(file_sink_config).start()
    forwarder.wait_serving()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(3):
            sender.sendto(b"kmsg-test", ("127.0.0.1", port))
    received = _wait_for_tagged(file_sink_config, f"[{tag}]", 3)
    assert forwarder.stop() == 0
    for record in received:
        assert record["facility"] == "kern"
        assert record["facility_code"] == 0
        assert record["level"] == "warning"
        message = record["message"]
        assert message.startswith(f"[{tag}] IN= OUT=lo ")
        assert "SRC=127.0.0.1 DST=127.0.0.1" in message
        assert "PROTO=UDP SPT=" in message
        assert f"DPT={port} LEN=17" in message


class _Injector(threading.Thread):
    """Writes tagged records steadily in the background while a test restarts things."""

    def __init__(self, tag: str, count: int, per_second: float) -> None:
        super().__init__(daemon=True)
        self.tag = tag
        self.count = count
        self.pause_s = 1 / per_second

    def run(self) -> None:
        for start in range(0, self.count, 10):
            inject(f"{self.tag} n={index}" for index in range(start, min(start + 10, self.count)))
            time.sleep(self.pause_s * 10)


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"]
)
def test_restart_while_records_flow_loses_nothing(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any], stop_signal: int
) -> None:
    """Stopping (SIGTERM drain, or SIGKILL) mid-stream and restarting delivers every record.

    After SIGTERM there is no duplicate; after SIGKILL at most one batch is sent twice.
    """
    config = dict(file_sink_config, batch={"max_records": 20, "linger_ms": 20, "max_in_flight": 1})
    tag = unique_tag()
    total = 400
    first = forwarder_factory(config).start()
    first.wait_serving()
    injector = _Injector(tag, total, per_second=200)
    injector.start()
    wait_until(lambda: len(records_with_tag(read_ndjson(_out(config)), tag)) >= 100)
    if stop_signal == signal.SIGKILL:
        first.kill()
    else:
        assert first.stop(stop_signal) == 0
    second = forwarder_factory(config).start()
    # Serving means its signal handlers are in place: the first run may have shipped
    # every record already (a slow stop), and a SIGTERM during start-up would kill it.
    second.wait_serving()
    injector.join()
    _wait_for_tagged(config, tag, total)
    assert second.stop() == 0

    events = read_ndjson(_out(config))
    received = records_with_tag(events, tag)
    numbers = Counter(int(record["message"].rsplit("=", 1)[1]) for record in received)
    assert set(numbers) == set(range(total))
    duplicates = sum(count - 1 for count in numbers.values())
    if stop_signal == signal.SIGTERM:
        assert duplicates == 0
    else:
        assert duplicates <= 20
    assert list(iter_gaps(events)) == []
    seqs = sorted({record["seq"] for record in received})
    assert len(seqs) == total


def test_overflow_while_stopped_is_reported_as_a_gap_with_the_exact_count(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any]
) -> None:
    """Records overwritten while the forwarder is frozen appear as a gap event and a metric."""
    forwarder = forwarder_factory(file_sink_config).start()
    forwarder.wait_serving()
    warmup = unique_tag()
    inject([f"{warmup} before"])
    _wait_for_tagged(file_sink_config, warmup, 1)

    tag = unique_tag()
    forwarder.signal_group(signal.SIGSTOP)
    try:
        inject(f"{tag} flood {index:05d} " + "x" * 60 for index in range(4000))
    finally:
        forwarder.signal_group(signal.SIGCONT)
    inject([f"{tag} after"])
    _wait_for_tagged(file_sink_config, f"{tag} after", 1)

    events = read_ndjson(_out(file_sink_config))
    gaps = [gap for gap in iter_gaps(events) if gap["reason"] == "overwritten"]
    assert gaps, "the flood overwrote unread records, a gap event must say so"
    for gap in gaps:
        assert gap["lost"] == gap["last_seq"] - gap["first_seq"] + 1
    # Every seq from the first record to the last is either delivered or inside a gap.
    delivered = {event["seq"] for event in events if event["event"] == "kmsg"}
    lost = {seq for gap in gaps for seq in range(gap["first_seq"], gap["last_seq"] + 1)}
    assert not delivered & lost
    assert delivered | lost == set(range(min(delivered), max(delivered) + 1))
    assert forwarder.metric("kmsg_forwarder_records_lost_total", reason="overwritten") == sum(
        gap["lost"] for gap in gaps
    )
    assert forwarder.metric("kmsg_forwarder_overruns_total") >= 1
    assert forwarder.stop() == 0


def test_new_boot_id_reports_a_reboot_gap_and_ships_the_new_boot_from_its_oldest_record(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any], tmp_path: Path
) -> None:
    """A changed boot_id between runs gives a 'reboot' gap, then the ring from its oldest record."""
    boot_id_path = tmp_path / "boot_id"
    old_boot, new_boot = str(uuid.uuid4()), str(uuid.uuid4())
    boot_id_path.write_text(old_boot + "\n")
    # One batch in flight: the file then holds the events in send order (the gap first).
    config = dict(
        file_sink_config,
        source={"boot_id_path": str(boot_id_path)},
        batch={**file_sink_config["batch"], "max_in_flight": 1},
    )
    tag = unique_tag()
    first = forwarder_factory(config).start()
    inject([f"{tag} old boot"])
    _wait_for_tagged(config, f"{tag} old boot", 1)
    assert first.stop() == 0
    old_checkpoint = checkpoint(Path(config["state_dir"]), "out")
    assert old_checkpoint is not None
    assert old_checkpoint["boot_id"] == old_boot
    lines_before = len(read_ndjson(_out(config)))

    boot_id_path.write_text(new_boot + "\n")
    oldest_before, _ = ring_bounds(KMSG)
    second = forwarder_factory(config).start()
    inject([f"{tag} new boot"])
    _wait_for_tagged(config, f"{tag} new boot", 1)
    assert second.stop() == 0

    second_run = read_ndjson(_out(config))[lines_before:]
    assert second_run[0]["event"] == "gap"
    assert second_run[0]["reason"] == "reboot"
    assert second_run[0]["boot_id"] == old_boot
    assert second_run[0]["first_seq"] == old_checkpoint["seq"] + 1
    assert second_run[0]["last_seq"] is None
    assert second_run[0]["lost"] is None
    first_record = next(event for event in second_run if event["event"] == "kmsg")
    assert first_record["boot_id"] == new_boot
    # From the oldest record still there, not from the old boot's checkpoint position.
    assert oldest_before is not None
    assert oldest_before <= first_record["seq"] <= old_checkpoint["seq"]
    new_checkpoint = checkpoint(Path(config["state_dir"]), "out")
    assert new_checkpoint is not None
    assert new_checkpoint["boot_id"] == new_boot


def test_min_level_drops_records_but_the_checkpoint_moves_past_them(
    forwarder_factory: ForwarderFactory, file_sink_config: dict[str, Any]
) -> None:
    """Records above min_level are not shipped, yet count as delivered in the checkpoint."""
    config = dict(file_sink_config, source={"min_level": "warning"})
    forwarder = forwarder_factory(config).start()
    forwarder.wait_serving()
    tag = unique_tag()
    inject([f"{tag} serious"], priority=11)
    inject([f"{tag} chatter"], priority=15)
    inject([f"{tag} marker"], priority=12)
    _wait_for_tagged(config, f"{tag} marker", 1)
    wait_until(lambda: forwarder.metric("kmsg_forwarder_records_filtered_total", sink="out") > 0)
    assert forwarder.stop() == 0
    # Sorted by seq: with two batches in flight the file may hold them in either order.
    shipped = sorted(records_with_tag(read_ndjson(_out(config)), tag), key=lambda r: r["seq"])
    assert [record["message"] for record in shipped] == [f"{tag} serious", f"{tag} marker"]
    saved = checkpoint(Path(config["state_dir"]), "out")
    assert saved is not None
    assert saved["seq"] >= shipped[-1]["seq"]
