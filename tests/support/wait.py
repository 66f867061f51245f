"""Bounded waits for a positive signal: every wait in the tests ends, and says what it waited for.

Tests never sleep to let something happen or to prove that it did not: they wait for the
thing itself (a log line, a metric, a file), each wait bounded by a deadline that fails
the test with the condition's name.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], *, timeout_s: float = 30, interval_s: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what or predicate}")
        time.sleep(interval_s)


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float = 10,
    interval_s: float = 0.01,
    what: str = "",
) -> T:
    """Like :func:`wait_until`, yielding to the loop between polls; ``predicate`` may be async."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what or predicate}")
        await asyncio.sleep(interval_s)
