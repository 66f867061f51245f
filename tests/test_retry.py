"""The retry policy: what is retried, Retry-After, budgets, and waking up on recovery."""

from __future__ import annotations

import asyncio

import pytest

from forwarder.config import RetryConfig
from forwarder.errors import FatalSinkError, RetryableSinkError
from forwarder.retry import RetryPolicy
from tests.support.wait import wait_until_async


class _Flaky:
    """Fails with the given errors, then succeeds; records each wait it was told about."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.waits: list[float] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    def on_failure(self, _error: RetryableSinkError, wait_s: float) -> None:
        self.waits.append(wait_s)


async def test_retryable_errors_are_retried_until_success() -> None:
    """Transient failures are retried and each retry is reported before its wait."""
    flaky = _Flaky(RetryableSinkError("a"), RetryableSinkError("b"))
    policy = RetryPolicy(RetryConfig(initial_backoff_ms=1, max_backoff_ms=5))
    assert await policy.call(flaky, flaky.on_failure) == "ok"
    assert flaky.calls == 3
    assert len(flaky.waits) == 2


async def test_fatal_errors_are_not_retried() -> None:
    """A permanent failure goes straight back to the caller."""
    flaky = _Flaky(FatalSinkError("no"))
    policy = RetryPolicy(RetryConfig(initial_backoff_ms=1, max_backoff_ms=5))
    with pytest.raises(FatalSinkError):
        await policy.call(flaky, flaky.on_failure)
    assert flaky.calls == 1


async def test_retry_after_sets_the_minimum_wait() -> None:
    """A server's Retry-After is honoured: the wait is at least what it asked for."""
    flaky = _Flaky(RetryableSinkError("slow down", retry_after_s=0.2))
    policy = RetryPolicy(RetryConfig(initial_backoff_ms=1, max_backoff_ms=5))
    await policy.call(flaky, flaky.on_failure)
    assert flaky.waits[0] >= 0.2


async def test_budget_spent_reraises_the_last_error() -> None:
    """With a retry budget, the last retryable error comes back once it is spent."""
    flaky = _Flaky(*[RetryableSinkError(str(n)) for n in range(1000)])
    policy = RetryPolicy(RetryConfig(initial_backoff_ms=10, max_backoff_ms=20, budget_s=0.1))
    with pytest.raises(RetryableSinkError):
        await policy.call(flaky, flaky.on_failure)
    assert flaky.calls > 1


async def test_wake_ends_a_long_backoff_when_the_receiver_is_back() -> None:
    """A backoff of up to an hour ends as soon as the sink signals it recovered."""
    flaky = _Flaky(RetryableSinkError("down"))
    wake = asyncio.Event()
    policy = RetryPolicy(RetryConfig(initial_backoff_ms=3_600_000, max_backoff_ms=3_600_000))
    call = asyncio.create_task(policy.call(flaky, flaky.on_failure, wake=wake))
    await wait_until_async(lambda: flaky.waits, what="the first backoff to start")
    wake.set()
    assert await asyncio.wait_for(call, timeout=30) == "ok"
    assert flaky.calls == 2


async def test_wake_does_not_cut_a_retry_after_wait() -> None:
    """A wait the server asked for (Retry-After) is kept even when the sink recovers."""
    flaky = _Flaky(RetryableSinkError("429", retry_after_s=0.5))
    wake = asyncio.Event()
    wake.set()
    policy = RetryPolicy(RetryConfig(initial_backoff_ms=1, max_backoff_ms=5))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await policy.call(flaky, flaky.on_failure, wake=wake)
    assert loop.time() - started >= 0.5
