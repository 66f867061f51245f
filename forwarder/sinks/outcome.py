"""What a receiver answered about one batch: the one value every ``Sink.send`` returns.

A sink never decides what happens next; it only says what the receiver said. Items are
named by their index in the batch that was sent, so nothing is mutated in place::

    verdict          the receiver said                        the worker then
    ANSWERED         stored all but ``retry``, ``rejected``   resends ``retry`` alone, dead-letters
                     and ``duplicates``                       ``rejected``, counts duplicates
    UNAVAILABLE      nothing usable (no answer, timeout,      resends the whole batch after a
                     429/5xx for the whole batch)             backoff (at least ``retry_after_s``)
    SPLIT            the batch as a whole cannot be taken,    splits it in halves; one item alone
                     but smaller ones may (too large; a 400    is dead-lettered as ``split_reason``
                     that names no item)
    OPERATOR_NEEDED  a configuration problem (auth, TLS,      resends the whole batch forever, shows
                     unknown topic, wrong endpoint)           the sink as not ready on /readyz

An exception out of ``start()`` or ``send()`` means only "no answer": the sink's
``classify(error)`` turns it into an Outcome (UNAVAILABLE, or OPERATOR_NEEDED for what a
person must fix). :mod:`forwarder.delivery.worker` is the one place that acts on an Outcome.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Verdict(enum.Enum):
    """What kind of answer an :class:`Outcome` is (table in the module docstring)."""

    ANSWERED = "answered"
    UNAVAILABLE = "unavailable"
    SPLIT = "split"
    OPERATOR_NEEDED = "operator_needed"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One item of the batch the receiver permanently refused.

    ``index`` is its position in the batch sent; ``reason`` a short, low-cardinality class
    (a metric label, e.g. ``loki_400``); ``detail`` the receiver's own words, kept in the
    dead-letter file and the log.
    """

    index: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """A receiver's whole answer about one batch (build it with the class methods)."""

    verdict: Verdict = Verdict.ANSWERED
    retry: tuple[int, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    duplicates: int = 0
    retry_after_s: float | None = None
    detail: str = ""
    split_reason: str = "too_large"

    @classmethod
    def delivered(cls) -> Outcome:
        """Every item was stored."""
        return _DELIVERED

    @classmethod
    def answered(
        cls,
        *,
        retry: Iterable[int] = (),
        rejected: Iterable[Rejection] = (),
        duplicates: int = 0,
        retry_after_s: float | None = None,
        detail: str = "",
    ) -> Outcome:
        """Item verdicts: everything not to retry, not rejected and no duplicate was stored."""
        return cls(
            Verdict.ANSWERED, tuple(retry), tuple(rejected), duplicates, retry_after_s, detail
        )

    @classmethod
    def refused(cls, indices: Iterable[int], reason: str, detail: str) -> Outcome:
        """The receiver permanently refused these items (and stored the others)."""
        return cls.answered(rejected=(Rejection(index, reason, detail) for index in indices))

    @classmethod
    def unavailable(cls, detail: str, *, retry_after_s: float | None = None) -> Outcome:
        """No usable answer: the whole batch must be sent again."""
        return cls(Verdict.UNAVAILABLE, retry_after_s=retry_after_s, detail=detail)

    @classmethod
    def too_large(cls, detail: str) -> Outcome:
        """The batch is too large for the receiver: split it (a lone item: ``too_large``)."""
        return cls(Verdict.SPLIT, detail=detail)

    @classmethod
    def split(cls, detail: str, *, reason: str) -> Outcome:
        """Refused whole, items unnamed: split it; a lone item still refused is ``reason``."""
        return cls(Verdict.SPLIT, detail=detail, split_reason=reason)

    @classmethod
    def operator_needed(cls, detail: str, *, retry_after_s: float | None = None) -> Outcome:
        """A configuration problem a person must fix; ``detail`` says what it is."""
        return cls(Verdict.OPERATOR_NEEDED, retry_after_s=retry_after_s, detail=detail)

    @property
    def wants_retry(self) -> bool:
        """Whether some of the batch must be sent again."""
        if self.verdict is Verdict.ANSWERED:
            return bool(self.retry)
        return self.verdict is not Verdict.SPLIT


_DELIVERED = Outcome()


def describe(error: BaseException) -> str:
    """``Type: message`` of an exception, for an Outcome's detail."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
