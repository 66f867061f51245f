"""The one place that retries: capped exponential backoff with full jitter (tenacity).

Every sink call the pipeline makes (``start`` and ``send``) goes through
:meth:`RetryPolicy.call`. Only :class:`RetryableSinkError` is retried; a server's
Retry-After is honoured (the wait is at least what it asked). ``budget_s = 0`` retries
forever, otherwise the last error is re-raised once the budget is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from forwarder.config import RetryConfig
from forwarder.errors import RetryableSinkError, SinkConfigError

T = TypeVar("T")
FailureHook = Callable[[RetryableSinkError, float], None]


class RetryPolicy:
    """Retries retryable sink failures according to ``[retry]``."""

    def __init__(self, config: RetryConfig) -> None:
        self._config = config
        self._budget_spent = stop_after_delay(config.budget_s)
        self._jitter = wait_random_exponential(
            multiplier=config.initial_backoff_ms / 1000, max=config.max_backoff_ms / 1000
        )

    def _stop(self, state: RetryCallState) -> bool:
        """Stop once the budget is spent, but never on a configuration problem.

        Auth failures or an unknown topic are fixed by a person, not by time: the data is
        kept and the sink shows as not ready until then (DESIGN.md section 4).
        """
        if not self._config.budget_s:
            return False
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, SinkConfigError):
            return False
        return bool(self._budget_spent(state))

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        on_failure: FailureHook,
        *,
        wake: asyncio.Event | None = None,
    ) -> T:
        """Run ``operation`` until it succeeds; ``on_failure(error, wait_s)`` before each wait.

        Setting ``wake`` ends a backoff early (the receiver is back: another call to it just
        succeeded), except a wait the server asked for with Retry-After.
        """
        interruptible = True

        def wait(state: RetryCallState) -> float:
            nonlocal interruptible
            jittered = self._jitter(state)
            error = state.outcome.exception() if state.outcome else None
            interruptible = True
            if isinstance(error, RetryableSinkError) and error.retry_after_s is not None:
                interruptible = False
                return max(error.retry_after_s, jittered)
            return jittered

        async def sleep(seconds: float) -> None:
            if wake is None or not interruptible:
                await asyncio.sleep(seconds)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), seconds)

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            assert isinstance(error, RetryableSinkError)
            on_failure(error, state.upcoming_sleep)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableSinkError),
            wait=wait,
            stop=self._stop,
            before_sleep=before_sleep,
            sleep=sleep,
            reraise=True,
        )
        return await retrying(operation)
