"""The embedded sinks: stdout stops the forwarder when closed, file leaves no torn line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forwarder.errors import OutputClosedError
from forwarder.sinks.base import Batch, outcome_of
from forwarder.sinks.file import FileSink
from forwarder.sinks.outcome import Verdict
from forwarder.sinks.stdout import StdoutSink
from tests.support.events import identity, make_events


async def test_stdout_closed_by_its_reader_stops_the_forwarder():
    """`kmsg-forwarder | head` ends with OutputClosedError, not an endless retry."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "wb", buffering=0) as stream:
        sink = StdoutSink("stdout", stream)
        with pytest.raises(OutputClosedError):
            await sink.send(Batch(make_events(["a"], who=identity())))


async def test_file_sink_on_a_full_disk_is_retryable():
    """ENOSPC (here /dev/full) is classified 'unavailable' (retried), not a crash."""
    sink = FileSink("full", Path("/dev/full"), fsync=False)
    await sink.start()
    try:
        outcome = await outcome_of(sink, sink.send(Batch(make_events(["a", "b"], who=identity()))))
    finally:
        await sink.close()
    assert outcome.verdict is Verdict.UNAVAILABLE
    assert "/dev/full" in outcome.detail
