"""The live side of the fan-out: a router whose sinks can leave and rejoin, and the cursors.

The reader appends every record to the spool once, then routes the chunk to the sinks that
are *attached* (caught up) exactly as without a spool: no re-read, no re-encode. A lagging
sink is *detached* from the :class:`SharedRouter` and reads the spool at its own position
(``forwarder.spool.catch_up``) until it is attached again. The checkpoints are the only
cursors: :class:`CheckpointTracker` remembers each sink's last saved one, from which the
spool releases what every sink has delivered.
"""

from __future__ import annotations

from pathlib import Path

from forwarder.delivery.checkpoint import Checkpoint, CheckpointStore
from forwarder.routing import Router, _Cursor


class SharedRouter(Router):
    """The live router, whose sinks can be detached (lagging) and attached again."""

    def detach(self, sink: str) -> None:
        """Stop routing to ``sink`` (it reads the spool from now on)."""
        self._cursors.pop(sink, None)

    def attach(self, sink: str, last_seq: int) -> None:
        """Route to ``sink`` again; it has everything of the current boot up to ``last_seq``."""
        self._cursors[sink] = _Cursor(last_seq)

    def attached(self, sink: str) -> bool:
        """True while ``sink`` takes the live path."""
        return sink in self._cursors


class CheckpointTracker(CheckpointStore):
    """The checkpoint store, remembering each sink's last saved position (for release)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.positions: dict[str, tuple[str, int]] = {}

    def load(self, sink: str) -> Checkpoint | None:
        """The sink's checkpoint (see CheckpointStore), remembered as its position."""
        checkpoint = super().load(sink)
        if checkpoint is not None:
            self.positions[sink] = (checkpoint.boot_id, checkpoint.seq)
        return checkpoint

    def save(self, sink: str, boot_id: str, seq: int, clock_offset_ns: int) -> Checkpoint:
        """Durably replace the sink's checkpoint (see CheckpointStore) and remember it."""
        checkpoint = super().save(sink, boot_id, seq, clock_offset_ns)
        self.positions[sink] = (boot_id, seq)
        return checkpoint
