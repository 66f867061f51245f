"""Read what the kernel logs from now on: a tail of /dev/kmsg, drained by a thread.

The records are parsed with the forwarder's own parser and can be fed to a fresh
KernelEventClassifier (:func:`classify`), so a test judges real output of this kernel.
Format: https://www.kernel.org/doc/Documentation/ABI/testing/dev-kmsg (FACTS.md).
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Self

from forwarder.kernel_events import KernelEvent, KernelEventClassifier
from forwarder.source.parser import Record, parse_record
from tests.support.wait import wait_until

KMSG = Path("/dev/kmsg")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
READ_BUFFER_BYTES = 16384
POLL_INTERVAL_MS = 20
STOP_TIMEOUT_S = 20
# A kern record's prefix (0 << 3 | level) is one digit 0-7 then a comma: others stay unparsed.
_KERN_PREFIX_DIGITS = frozenset(b"01234567")


class KernelLog:
    """The kern records the kernel logs from now on: a tail of /dev/kmsg opened at its end.

    A thread drains the device as records come, since other suites on this machine may
    flood the ring (about 2,000 records, FACTS.md) faster than a test polls. Only facility
    kern is kept: the classifier ignores every other record.
    """

    def __init__(self, path: Path = KMSG) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self._fd, 0, os.SEEK_END)
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.overruns = 0
        self._reader = threading.Thread(target=self._drain_until_stopped, daemon=True)
        self._reader.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._reader.join(timeout=STOP_TIMEOUT_S)
        os.close(self._fd)

    @property
    def records(self) -> list[Record]:
        """The kern records read so far, in seq order."""
        with self._lock:
            return list(self._records)

    def _drain_until_stopped(self) -> None:
        # Real-time (like the forwarder's capture) so a flooding neighbour cannot starve the
        # reader while the ring turns over; it sleeps in poll() whenever it has caught up.
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))  # 0: this thread only
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            poller.poll(POLL_INTERVAL_MS)
            while True:
                try:
                    raw = os.read(self._fd, READ_BUFFER_BYTES)
                except BlockingIOError:
                    break
                except BrokenPipeError:
                    self.overruns += 1  # a flood overwrote records before we read them
                    continue
                if raw[1:2] == b"," and raw[0] in _KERN_PREFIX_DIGITS:
                    record = parse_record(raw)
                    with self._lock:
                        self._records.append(record)

    def wait_for(
        self, predicate: Callable[[Record], bool], *, what: str, timeout_s: float = 20
    ) -> Record:
        """The first kern record matching ``predicate``, waiting (bounded) for it."""

        def found() -> Record | None:
            return next((r for r in self.records if predicate(r)), None)

        record = wait_until(
            found, timeout_s=timeout_s, what=f"kernel record {what} ({self.overruns} overruns)"
        )
        assert record is not None  # wait_until returns only a truthy value
        return record

    def wait_for_text(self, text: str, *, timeout_s: float = 20) -> Record:
        """The first kern record containing ``text``."""
        return self.wait_for(lambda r: text in r.message, what=repr(text), timeout_s=timeout_s)


def classify(records: list[Record]) -> list[KernelEvent]:
    """Every kernel event a fresh classifier makes of ``records`` (flushed at the end)."""
    boot_id = BOOT_ID.read_text().strip()
    classifier = KernelEventClassifier(host="test", boot_id=boot_id, clock_offset_ns=0)
    events = [event for record in records for event in classifier.feed(record)]
    return events + classifier.flush()
