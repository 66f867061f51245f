"""Turn a :class:`KernelEvent` into the :class:`Event` every sink takes.

The JSON object is :meth:`KernelEvent.to_dict` (the vectors' judging block); the Event's
checkpoint position is the seq of the record that completed the report (or, for a report
flushed at the end of a dump or after 2 s of quiet, the newest record read), so a sink
whose checkpoint already stands there got the event before a restart.
"""

from __future__ import annotations

import orjson

from forwarder.encoding.reference import Event
from forwarder.kernel_events.model import KernelEvent


def encode_kernel_event(event: KernelEvent, position: int) -> Event:
    """The shippable event of ``event``, moving a sink's checkpoint to ``position``."""
    # orjson hands back its whole output buffer: copy to size, events may wait for a slow sink.
    encoded = memoryview(orjson.dumps(event.to_dict())).tobytes()
    return Event("kernel_event", event.id, event.boot_id, position, event.timestamp_ns, encoded)


def class_of(event: Event) -> str:
    """The class of a kernel_event Event, read from its id (``<boot_id>-<first_seq>-<class>``)."""
    return event.id.rpartition("-")[2]
