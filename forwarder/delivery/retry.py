"""The one place that retries: capped exponential backoff with full jitter (tenacity).

Every sink call the delivery worker makes (``start`` and ``send``) goes through
:meth:`RetryPolicy.call`, which repeats it while its :class:`Outcome` wants a retry. A
server's Retry-After is honoured (the wait is at least what it asked). ``budget_s = 0``
retries forever, otherwise the last Outcome comes back once the budget is spent, except
for a configuration problem: that waits for a person, however long it takes.

The first attempt runs before tenacity is involved: almost every call succeeds at once, and
a healthy forwarder then neither builds a retrying controller per batch nor imports tenacity
at all (0.6 MiB of its idle memory). The budget counts from the first attempt's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from forwarder.config import RetryConfig
from forwarder.sinks.outcome import Outcome, Verdict

if TYPE_CHECKING:
    from tenacity import RetryCallState

RetryHook = Callable[[Outcome, float], None]


def _last(state: RetryCallState) -> Outcome | None:
    """The Outcome of the attempt just made (None if it raised)."""
    if state.outcome is None or state.outcome.failed:
        return None
    outcome: Outcome = state.outcome.result()
    return outcome


def _wants_retry(outcome: Outcome) -> bool:
    return outcome.wants_retry


class RetryPolicy:
    """Retries what a sink must be sent again, according to ``[retry]``."""

    def __init__(self, config: RetryConfig) -> None:
        self._config = config

    def _budget_spent(self, state: RetryCallState) -> bool:
        from tenacity import stop_after_delay  # noqa: PLC0415 - only once a retry is needed

        return bool(stop_after_delay(self._config.budget_s)(state))

    def _jitter(self, state: RetryCallState) -> float:
        from tenacity import wait_random_exponential  # noqa: PLC0415 - only once a retry is needed

        config = self._config
        wait = wait_random_exponential(
            multiplier=config.initial_backoff_ms / 1000, max=config.max_backoff_ms / 1000
        )
        return float(wait(state))

    def _stop(self, state: RetryCallState) -> bool:
        """Stop once the budget is spent, but never on a configuration problem.

        Auth failures or an unknown topic are fixed by a person, not by time: the data is
        kept and the sink shows as not ready until then (DESIGN.md section 4).
        """
        if not self._config.budget_s:
            return False
        outcome = _last(state)
        if outcome is not None and outcome.verdict is Verdict.OPERATOR_NEEDED:
            return False
        return self._budget_spent(state)

    async def call(
        self,
        operation: Callable[[], Awaitable[Outcome]],
        on_retry: RetryHook,
        *,
        wake: asyncio.Event | None = None,
    ) -> Outcome:
        """Run ``operation`` until its Outcome wants no retry; ``on_retry(outcome, wait_s)`` first.

        Returns the last Outcome (one that still wants a retry once the budget is spent).
        An exception from ``operation`` is not retried: it goes back to the caller. Setting
        ``wake`` ends a backoff early (the receiver is back: another call to it just
        succeeded), except a wait the server asked for with Retry-After.
        """
        first = await operation()
        if not first.wants_retry:
            return first
        from tenacity import AsyncRetrying, retry_if_result  # noqa: PLC0415 - see the docstring

        answered = False

        async def attempt() -> Outcome:
            nonlocal answered
            if answered:
                return await operation()
            answered = True  # the first attempt's answer, already in hand
            return first

        interruptible = True

        def wait(state: RetryCallState) -> float:
            nonlocal interruptible
            jittered = self._jitter(state)
            outcome = _last(state)
            interruptible = True
            if outcome is not None and outcome.retry_after_s is not None:
                interruptible = False
                return max(outcome.retry_after_s, jittered)
            return jittered

        async def sleep(seconds: float) -> None:
            if wake is None or not interruptible:
                await asyncio.sleep(seconds)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), seconds)

        def before_sleep(state: RetryCallState) -> None:
            outcome = _last(state)
            assert outcome is not None
            on_retry(outcome, state.upcoming_sleep)

        def give_up(state: RetryCallState) -> Outcome:
            outcome = _last(state)
            assert outcome is not None
            return outcome

        retrying = AsyncRetrying(
            retry=retry_if_result(_wants_retry),
            wait=wait,
            stop=self._stop,
            before_sleep=before_sleep,
            sleep=sleep,
            retry_error_callback=give_up,
            reraise=True,
        )
        outcome: Outcome = await retrying(attempt)
        return outcome
