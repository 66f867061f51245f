"""Model-based test of the spool: writer, readers, release, eviction, corruption and crashes.

A plain model (what was appended, per boot) runs beside the real spool in a temp directory.
Hypothesis chooses appends (with seq jumps, as when the ring overwrote records), reads by
several sinks, releases, fsyncs, flipped bytes in sealed segments, process crashes (every
written byte kept) and power losses (each file cut to its last fsynced length), and reboots.
After every step: what a reader returns is never a wrong record, its gaps never hide a
record the spool still holds, and the files never exceed ``max_bytes``. A reader caught up
has every record the model still owes it, delivered or inside a gap.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from forwarder.spool.config import SpoolConfig
from forwarder.spool.reader import SpooledRecord, SpoolGap, SpoolReader
from forwarder.spool.spool import Spool
from tests.spool.helpers import crash_spool, disk_bytes, durable_seqs, read_all, records_of

SINKS = ("a", "b", "c")


def _raw(boot: str, seq: int, size: int) -> bytes:
    return f"6,{seq},{seq * 10},-;{boot} ".encode() + b"x" * size


class SpoolMachine(RuleBasedStateMachine):
    """The spool against a model of what it owes each sink."""

    @initialize(
        max_bytes=st.sampled_from([4096, 8192, 65536]),
        fsync=st.sampled_from(["interval", "always", "never"]),
        when_full=st.sampled_from(["drop_oldest", "block"]),
    )
    def start(self, max_bytes: int, fsync: str, when_full: str) -> None:
        """A fresh spool directory and a first boot."""
        self.directory = Path(tempfile.mkdtemp(prefix="spool-model-"))
        self.config = SpoolConfig(max_bytes=max_bytes, fsync=fsync, when_full=when_full)  # type: ignore[arg-type]
        self.boots = ["boot-0"]
        self.stored: dict[tuple[str, int], bytes] = {}  # what the model says the spool holds
        self.next_seq = 0
        self.corrupted = False
        self.now = 0.0  # the spool's clock: time passes only by the rule below (deterministic)
        self.spool = self._open()
        self.readers = {name: SpoolReader(self.spool, "boot-0", -1) for name in SINKS}
        self.owed_from = dict.fromkeys(SINKS, ("boot-0", -1))
        self.seen: dict[str, set[tuple[str, int]]] = {name: set() for name in SINKS}

    def _open(self) -> Spool:
        spool = Spool(self.config, self.directory, monotonic=lambda: self.now)
        spool.open(self.boots[-1], len(self.boots))
        return spool

    def teardown(self) -> None:
        """Close the spool and remove its directory."""
        if hasattr(self, "spool"):
            self.spool.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- rules ----------------------------------------------------------------------

    @rule(count=st.integers(1, 30), jump=st.sampled_from([0, 0, 0, 1, 5]), size=st.integers(0, 200))
    def append(self, count: int, jump: int, size: int) -> None:
        """Append a group of records (a jump: the ring overwrote some before they were read)."""
        boot = self.boots[-1]
        first = self.next_seq + jump
        seqs = list(range(first, first + count))
        raws = [_raw(boot, seq, size) for seq in seqs]
        taken = self.spool.append(seqs, raws)
        assert 0 <= taken <= count
        if self.config.when_full == "drop_oldest":
            assert taken == count
        for seq, raw in zip(seqs[:taken], raws[:taken], strict=True):
            self.stored[boot, seq] = raw
        self.next_seq = first + taken if taken else self.next_seq

    @rule(name=st.sampled_from(SINKS), limit=st.integers(1, 300))
    def read(self, name: str, limit: int) -> None:
        """One sink reads what follows its position."""
        self._check(name, self.readers[name].read(limit))

    @rule()
    def release(self) -> None:
        """Delete what every sink has read (their positions are the checkpoints)."""
        self.spool.release([reader.position for reader in self.readers.values()])

    @rule()
    def sync(self) -> None:
        """Sync the active segment now."""
        self.spool.sync()

    @precondition(lambda self: any(len(b.good()) > 1 for b in self.spool.boots))
    @rule(data=st.data())
    def corrupt(self, data: st.DataObject) -> None:
        """Flip one byte of a sealed segment."""
        sealed = [s for b in self.spool.boots for s in b.good()[:-1]]
        segment = data.draw(st.sampled_from(sealed))
        content = bytearray(segment.path.read_bytes())
        if not content:
            return
        where = data.draw(st.integers(0, len(content) - 1))
        content[where] ^= 0xFF
        segment.path.write_bytes(bytes(content))
        self.corrupted = True

    @rule(seconds=st.sampled_from([0.3, 1.5]))
    def time_passes(self, seconds: float) -> None:
        """Time passes and the housekeeping ticks: an interval fsync falls due now and then."""
        self.now += seconds
        self.spool.tick()

    @rule(power=st.booleans(), refill=st.booleans())
    def crash(self, power: bool, refill: bool) -> None:
        """The process dies (power: the machine too); start again, maybe re-reading the ring."""
        durable = durable_seqs(self.spool) if power else None
        crash_spool(self.spool)
        if durable is not None:
            path, length, _ = durable
            with path.open("r+b") as segment_file:
                segment_file.truncate(length)
        self.spool = self._open()
        boot = self.spool.current
        assert boot is not None
        tail = boot.tail_seq if boot.tail_seq is not None else -1
        lost = {key for key in self.stored if key[0] == boot.boot_id and key[1] > tail}
        if not power and not self.corrupted:
            assert not lost, "a process crash must lose nothing that was written"
        for key in lost:
            del self.stored[key]
        if refill and lost:  # the ring still had them: the capture re-reads them
            seqs = sorted(seq for _, seq in lost)
            raws = [_raw(boot.boot_id, seq, 0) for seq in seqs]
            taken = self.spool.append(seqs, raws)
            for seq, raw in zip(seqs[:taken], raws[:taken], strict=True):
                self.stored[boot.boot_id, seq] = raw
        self.readers = {
            name: SpoolReader(self.spool, *reader.position) for name, reader in self.readers.items()
        }

    @precondition(lambda self: len(self.boots) < 3)
    @rule()
    def reboot(self) -> None:
        """The machine reboots: a new boot id, seqs start at 0 again."""
        self.spool.close()
        self.boots.append(f"boot-{len(self.boots)}")
        self.next_seq = 0
        self.spool = self._open()
        self.readers = {
            name: SpoolReader(self.spool, *reader.position) for name, reader in self.readers.items()
        }

    # -- checks ---------------------------------------------------------------------

    def _order(self, boot: str, seq: int) -> tuple[int, int]:
        return self.boots.index(boot), seq

    def _check(self, name: str, entries: list[SpooledRecord | SpoolGap]) -> None:
        available = {
            (entry.boot_id, entry.seq)
            for entry in records_of(read_all(SpoolReader(self.spool, self.boots[0], -1)))
        }
        for entry in entries:
            if isinstance(entry, SpooledRecord):
                assert self.stored.get((entry.boot_id, entry.seq)) == entry.raw, entry
                self.seen[name].add((entry.boot_id, entry.seq))
            else:
                assert entry.first_seq <= entry.last_seq
                hidden = [
                    s
                    for s in range(entry.first_seq, entry.last_seq + 1)
                    if (entry.boot_id, s) in available
                ]
                assert not hidden, f"gap {entry} hides records the spool holds: {hidden[:5]}"
                for seq in range(entry.first_seq, entry.last_seq + 1):
                    self.seen[name].add((entry.boot_id, seq))

    @rule(name=st.sampled_from(SINKS))
    def catch_up(self, name: str) -> None:
        """A sink reads everything: it then holds every record it is owed, or a gap for it."""
        reader = self.readers[name]
        self._check(name, read_all(reader))
        if self.spool._memory.records or reader.position[0] != self.boots[-1]:
            return
        start = self._order(*self.owed_from[name])
        position = self._order(*reader.position)
        owed = [
            key
            for key in self.stored
            if start < self._order(*key) <= position and key not in self.seen[name]
        ]
        assert not owed, f"{name} never got {sorted(owed)[:5]}"
        newest = max((k for k in self.stored if k[0] == self.boots[-1]), default=None)
        assert newest is None or self._order(*newest) <= position

    @invariant()
    def bounded(self) -> None:
        """The files never exceed max_bytes."""
        if hasattr(self, "spool"):
            assert disk_bytes(self.directory) <= self.config.max_bytes


SpoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_spool_model = SpoolMachine.TestCase
