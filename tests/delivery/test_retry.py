"""The retry policy: what is retried, Retry-After, budgets, and waking up on recovery."""

from __future__ import annotations

import asyncio

import pytest

from forwarder.config import RetryConfig
from forwarder.delivery.retry import RetryPolicy
from forwarder.sinks.outcome import Outcome
from tests.support.wait import wait_until_async


class _Flaky:
    """Answers the given outcomes, then 'delivered'; records each wait it was told about."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.waits: list[float] = []

    async def __call__(self) -> Outcome:
        self.calls += 1
        if self.outcomes:
            return self.outcomes.pop(0)
        return Outcome.delivered()

    def on_retry(self, _outcome: Outcome, wait_s: float) -> None:
        self.waits.append(wait_s)


def _fast(**options: float) -> RetryPolicy:
    return RetryPolicy(RetryConfig(initial_backoff_ms=1, max_backoff_ms=5, **options))


async def test_outcomes_wanting_a_retry_are_retried_until_delivered() -> None:
    """Unavailable, partial and operator-needed answers are retried, each reported before its wait."""
    flaky = _Flaky(
        Outcome.unavailable("a"), Outcome.answered(retry=[0]), Outcome.operator_needed("401")
    )
    assert await _fast().call(flaky, flaky.on_retry) == Outcome.delivered()
    assert flaky.calls == 4
    assert len(flaky.waits) == 3


@pytest.mark.parametrize(
    "final",
    [Outcome.too_large("big"), Outcome.refused([0], "http_4xx", "400")],
    ids=["too_large", "refused"],
)
async def test_final_answers_are_not_retried(final: Outcome) -> None:
    """Too large and refused items go straight back to the caller."""
    flaky = _Flaky(final)
    assert await _fast().call(flaky, flaky.on_retry) is final
    assert flaky.calls == 1


async def test_an_exception_goes_back_to_the_caller() -> None:
    """The policy retries Outcomes only: an exception (e.g. stdout closed) is not retried."""

    async def broken() -> Outcome:
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        await _fast().call(broken, lambda _outcome, _wait_s: None)


async def test_retry_after_sets_the_minimum_wait() -> None:
    """A server's Retry-After is honoured: the wait is at least what it asked for."""
    flaky = _Flaky(Outcome.unavailable("slow down", retry_after_s=0.2))
    await _fast().call(flaky, flaky.on_retry)
    assert flaky.waits[0] >= 0.2


async def test_budget_spent_returns_the_last_outcome() -> None:
    """With a retry budget, the last outcome still wanting a retry comes back once it is spent."""
    flaky = _Flaky(*[Outcome.unavailable(str(n)) for n in range(1000)])
    policy = RetryPolicy(RetryConfig(initial_backoff_ms=10, max_backoff_ms=20, budget_s=0.1))
    outcome = await policy.call(flaky, flaky.on_retry)
    assert outcome.wants_retry
    assert outcome.detail == str(flaky.calls - 1)
    assert flaky.calls > 1


async def test_wake_ends_a_long_backoff_when_the_receiver_is_back() -> None:
    """A backoff of up to an hour ends as soon as the sink signals it recovered."""
    flaky = _Flaky(Outcome.unavailable("down"))
    wake = asyncio.Event()
    policy = RetryPolicy(RetryConfig(initial_backoff_ms=3_600_000, max_backoff_ms=3_600_000))
    call = asyncio.create_task(policy.call(flaky, flaky.on_retry, wake=wake))
    await wait_until_async(lambda: flaky.waits, what="the first backoff to start")
    wake.set()
    assert await asyncio.wait_for(call, timeout=30) == Outcome.delivered()
    assert flaky.calls == 2


async def test_wake_does_not_cut_a_retry_after_wait() -> None:
    """A wait the server asked for (Retry-After) is kept even when the sink recovers."""
    flaky = _Flaky(Outcome.unavailable("429", retry_after_s=0.5))
    wake = asyncio.Event()
    wake.set()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _fast().call(flaky, flaky.on_retry, wake=wake)
    assert loop.time() - started >= 0.5
