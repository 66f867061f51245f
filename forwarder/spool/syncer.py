"""The fsync of the spool's active segment, off the event loop: one thread, one job.

An fsync costs milliseconds (~6 ms here, far more on a busy disk); on the loop thread it
stalls the reader. :meth:`Syncer.request` only records what should be durable and wakes the
thread; requests that arrive while it syncs coalesce into one more fsync. :meth:`sync_now`
is the synchronous path (``fsync = "always"``, a seal, the drain, shutdown): it waits for a
running fsync, then syncs what remains.

The fd belongs to the writer; the syncer only borrows its number between :meth:`attach` and
:meth:`detach`. Every fsync runs holding ``_fd_lock`` and :meth:`detach` takes it, so the
writer closes the fd only after the thread let go of it, and the thread never fsyncs a
number that was closed (and maybe reused: a checkpoint file opened meanwhile gets the lowest
free number). An fsync error in the thread is kept for the loop thread to pick up
(:meth:`take_errors`): the spool's degraded mode handles it there, as it does a failed write.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from forwarder.spool.segments import Segment
    from forwarder.spool.writer import SpoolStats

log = structlog.get_logger("forwarder.spool")


class Syncer:
    """Fsyncs the attached segment's fd on request, in a thread started at the first request."""

    def __init__(self, stats: SpoolStats, fsync: Callable[[int], None] = os.fsync) -> None:
        self._stats = stats
        self._fsync = fsync  # a seam: tests block it or make it fail
        self._fd_lock = threading.Lock()  # held by every fsync and while the fd changes
        self._fd = -1
        self._segment: Segment | None = None
        self._wake = threading.Condition(threading.Lock())  # guards the fields below
        self._wanted: tuple[Segment, int] | None = None  # the newest request: durable up to
        self._errors: list[OSError] = []  # failed fsyncs the spool has not picked up yet
        self._stopping = False
        self._thread: threading.Thread | None = None

    def attach(self, fd: int, segment: Segment) -> None:
        """From now on ``fd`` is ``segment``'s, the one to sync."""
        with self._fd_lock:
            self._fd, self._segment = fd, segment

    def detach(self) -> None:
        """Forget the fd (waits for a running fsync): the caller may close it afterwards."""
        with self._fd_lock:
            self._fd, self._segment = -1, None

    def request(self, segment: Segment, size: int) -> None:
        """Make ``segment`` durable up to ``size`` bytes soon, in the thread (never blocks)."""
        with self._wake:
            self._wanted = (segment, size)
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="spool-syncer", daemon=True)
                self._thread.start()
            self._wake.notify()

    def sync_now(self, segment: Segment, size: int) -> None:
        """Make ``segment`` durable up to ``size`` bytes before returning (raises OSError)."""
        self._sync(segment, size)

    def take_errors(self) -> list[OSError]:
        """The thread's fsync errors since the last call, oldest first, each once."""
        with self._wake:
            errors, self._errors = self._errors, []
        return errors

    def stop(self) -> None:
        """End the thread and wait for it (a later request starts another)."""
        with self._wake:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._wanted = None
            self._wake.notify()
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._wanted is None and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                assert self._wanted is not None
                (segment, size), self._wanted = self._wanted, None
            try:
                self._sync(segment, size)
            except OSError as error:
                log.warning("spool_fsync_failed", segment=str(segment.path), error=error.strerror)
                self._keep(error)
            except Exception as error:  # a bug must not end the thread unseen: degrade loudly
                log.exception("spool_syncer_failed", segment=str(segment.path))
                self._keep(OSError(errno.EIO, f"spool syncer failed: {error!r}"))

    def _keep(self, error: OSError) -> None:
        with self._wake:
            self._errors.append(error)

    def _sync(self, segment: Segment, size: int) -> None:
        with self._fd_lock:
            # Another segment (or none) since the request: its seal or abandon dealt with it.
            if segment is not self._segment or size <= segment.synced_size:
                return
            began = time.perf_counter()
            self._fsync(self._fd)
            self._stats.fsyncs += 1
            self._stats.fsync_seconds += time.perf_counter() - began
            segment.synced_size = size
