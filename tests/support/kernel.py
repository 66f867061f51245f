"""Inject uniquely tagged records into the real /dev/kmsg, within the kernel's rate limit.

``kernel.printk_devkmsg=ratelimit`` lets each OPEN FILE write 10 records per 5 s and
silently drops the rest, so we open a fresh file for every 10 writes instead of
touching the sysctl (FACTS.md).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest

KMSG = Path("/dev/kmsg")
WRITES_PER_OPEN = 10


def kernel_available() -> bool:
    """True when we may read and write the real /dev/kmsg (root, device present)."""
    return os.geteuid() == 0 and os.access(KMSG, os.R_OK | os.W_OK)


requires_kernel = pytest.mark.skipif(
    not kernel_available(), reason="needs root and a readable/writable /dev/kmsg"
)


def unique_tag(prefix: str = "kft") -> str:
    """A tag no other test run will print: ``kft-<12 hex>``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def inject(messages: Iterable[str], *, priority: int = 14) -> None:
    """Write each message as one record (default user.info) to /dev/kmsg."""
    fd = -1
    try:
        for index, message in enumerate(messages):
            if index % WRITES_PER_OPEN == 0:
                if fd >= 0:
                    os.close(fd)
                fd = os.open(KMSG, os.O_WRONLY)
            os.write(fd, f"<{priority}>{message}\n".encode())
    finally:
        if fd >= 0:
            os.close(fd)


def newest_seq() -> int:
    """The seq of the newest record in the ring right now."""
    fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        last = -1
        while True:
            try:
                raw = os.read(fd, 16384)
            except BlockingIOError:
                return last
            except BrokenPipeError:
                continue
            last = int(raw.split(b",", 2)[1])
    finally:
        os.close(fd)


def records_after(seq: int) -> list[tuple[int, bytes]]:
    """(seq, raw record as read()) of every record in the ring newer than ``seq``."""
    fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK)
    found = []
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        while True:
            try:
                raw = os.read(fd, 16384)
            except BlockingIOError:
                return found
            except BrokenPipeError:
                continue
            if (number := int(raw.split(b",", 2)[1])) > seq:
                found.append((number, raw))
    finally:
        os.close(fd)
