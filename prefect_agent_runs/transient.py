"""The one definition of a *transient* failure, and the one backoff.

Three parts of the package retry: the transport (:mod:`prefect_agent_runs.http`), the
wait engine (:mod:`prefect_agent_runs.waiting`) and the duplicate-safe create
(:mod:`prefect_agent_runs.backends.create`). They all ask :func:`is_transient` whether
a failure is worth another try, and they all space their tries with :class:`Backoff`,
a tenacity wait strategy.

Transient (DESIGN.md, "Retry and idempotency rules"): no usable answer (connect errors,
timeouts, a dropped connection, a body cut short), 408, 429 and 5xx other than 501
(Not Implemented) and 505 (HTTP Version Not Supported), which no retry changes.

A transient failure of a *create* is *ambiguous* (:func:`may_have_started`) unless the
request provably never reached the server (a connect error) or was refused before being
processed (408, 429).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tenacity import RetryCallState
from tenacity.wait import wait_base

from prefect_agent_runs.errors import ApiError, TransportError

__all__ = [
    "Backoff",
    "is_transient",
    "is_transient_status",
    "may_have_started",
]

_PERMANENT_5XX = frozenset({501, 505})


def is_transient_status(status_code: int) -> bool:
    """True for an HTTP status worth another try: 408, 429 and 5xx but 501 and 505.

    Args:
        status_code: The answer's status code.
    """
    if status_code in (408, 429):
        return True
    return 500 <= status_code <= 599 and status_code not in _PERMANENT_5XX


def is_transient(exc: BaseException) -> bool:
    """True for a failure worth another try: no usable answer, or a transient status.

    Args:
        exc: Any exception.
    """
    if isinstance(exc, TransportError):
        return True
    if isinstance(exc, ApiError) and exc.status_code is not None:
        return is_transient_status(exc.status_code)
    return False


def may_have_started(exc: BaseException) -> bool:
    """True when a failed create may still have started something on the server.

    That is a transient failure, except a request that provably never reached the
    server (a connect error) or that the server refused before processing it (408, 429).

    Args:
        exc: The create's failure.
    """
    if not is_transient(exc):
        return False
    if isinstance(exc, TransportError):
        return exc.reached_server is not False
    return isinstance(exc, ApiError) and exc.status_code not in (408, 429)


@dataclass(frozen=True)
class Backoff(wait_base):
    """Exponential backoff with jitter, as a tenacity wait strategy.

    The n-th wait (n = 0 for the first) is ``min(initial * multiplier**n, maximum)``,
    shortened by a random share of up to ``jitter`` of itself: ``jitter=1.0`` is "full
    jitter" (uniform between 0 and the base), ``jitter=0.0`` is no jitter.

    Attributes:
        initial_seconds: The first wait's base.
        max_seconds: Cap of one wait's base.
        multiplier: Growth of the base after each wait.
        jitter: Share (0..1) of the base that the jitter may take off.
        rng: Random source (tests seed one).
    """

    initial_seconds: float
    max_seconds: float
    multiplier: float = 2.0
    jitter: float = 1.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        """The wait after ``attempt`` failed tries (0: the first wait).

        Args:
            attempt: How many waits came before this one.
        """
        base = min(self.initial_seconds * (self.multiplier**attempt), self.max_seconds)
        if not self.jitter:
            return base
        return base * (1.0 - self.jitter * self.rng.random())

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.delay(max(0, retry_state.attempt_number - 1))
