"""The one wait engine: observe a run until it is terminal, within a deadline.

A backend gives the engine one *observation step*: a poll (``GET`` the run) or a long
poll / server push (LangGraph ``join``). The engine repeats it, composed from tenacity
strategies like the transport's retries:

* ``retry``: while the run is not terminal, and through transient errors
  (:func:`prefect_agent_runs.transient.is_transient`: a proxy's 502, a dropped
  connection): a flaky API never fails the wait while the remote run
  carries on; ``max_poll_errors`` consecutive errors do.
* ``wait``: the server's hint (``openai-poll-after-ms``) when it sent one, else the
  shared :class:`~prefect_agent_runs.transient.Backoff` from ``poll_interval_seconds``
  to ``max_poll_interval_seconds``;
  never past the deadline.
* ``stop``: a monotonic deadline, ``timeout_seconds`` from the start of the wait, read
  from the engine's clock (:mod:`prefect_agent_runs.timing`; tests replace it, never sleep).

When the deadline passes, the remote run is cancelled (``cancel_on_timeout``) and
:class:`~prefect_agent_runs.errors.RunTimedOut` is raised. When the waiting coroutine is
cancelled (a Prefect cancellation, SIGTERM, a task timeout), the remote run is cancelled
too before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio
from tenacity import AsyncRetrying, RetryCallState, RetryError
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from prefect_agent_runs import timing
from prefect_agent_runs._cycles import release_retrying
from prefect_agent_runs.errors import (
    AgentRunsError,
    RateLimited,
    RunCancelled,
    RunError,
    RunExpired,
    RunFailed,
    RunRequiresAction,
    RunTimedOut,
    ValidationError,
)
from prefect_agent_runs.models import Run, RunStatus
from prefect_agent_runs.timing import Clock, Sleep
from prefect_agent_runs.transient import TRANSIENT_TOLERANCE, Backoff, is_transient

__all__ = [
    "Clock",
    "Observation",
    "PollPolicy",
    "Sleep",
    "Step",
    "cancel_quietly",
    "is_transient",
    "raise_for_outcome",
    "wait_for_terminal",
]

logger = logging.getLogger("prefect_agent_runs.waiting")


@dataclass(frozen=True)
class PollPolicy:
    """How long and how often to wait for a run.

    Attributes:
        timeout_seconds: How long to wait for a terminal state (None: no limit).
        cancel_on_timeout: Cancel the remote run when that deadline passes.
        poll_interval_seconds: The first interval between two observations.
        max_poll_interval_seconds: The backoff's cap.
        backoff_multiplier: Growth of the interval after each non-terminal observation.
        jitter: Random share (0..1) taken off each interval, so many waiters spread out.
        max_poll_errors: Consecutive transient errors tolerated before the wait fails.
        honor_server_hints: Follow the server's poll hint (``openai-poll-after-ms``).
    """

    timeout_seconds: float | None = None
    cancel_on_timeout: bool = True
    poll_interval_seconds: float = 1.0
    max_poll_interval_seconds: float = 15.0
    backoff_multiplier: float = 1.5
    jitter: float = 0.2
    max_poll_errors: int = TRANSIENT_TOLERANCE
    honor_server_hints: bool = True

    def __post_init__(self) -> None:
        if self.timeout_seconds is not None and self.timeout_seconds < 0:
            raise ValidationError(
                f"timeout_seconds must be >= 0 or None, not {self.timeout_seconds!r}"
            )
        if self.poll_interval_seconds <= 0:
            raise ValidationError(
                f"poll_interval_seconds must be > 0, not {self.poll_interval_seconds!r}"
            )
        if self.max_poll_interval_seconds < self.poll_interval_seconds:
            raise ValidationError("max_poll_interval_seconds must be >= poll_interval_seconds")
        if not 0.0 <= self.jitter < 1.0:
            raise ValidationError(f"jitter must be in [0, 1), not {self.jitter!r}")

    def with_overrides(self, **changes: Any) -> PollPolicy:
        """A copy with the given fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Observation:
    """One look at a run, as a step returns it.

    Attributes:
        run: The run's state now.
        poll_after_seconds: The server's hint for the next look, if it sent one.
    """

    run: Run
    poll_after_seconds: float | None = None


Step = Callable[[float | None], Awaitable[Observation]]
"""An observation step; its argument is the seconds left before the deadline (or None)."""


class _Deadline:
    def __init__(self, timeout_seconds: float | None, clock: Clock) -> None:
        self.clock = clock
        self.at = None if timeout_seconds is None else clock() + timeout_seconds

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - self.clock())

    def passed(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0.0


class _retry_until_terminal(retry_base):
    def __init__(self, policy: PollPolicy) -> None:
        self.policy = policy
        self.errors_in_a_row = 0

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None:
            return True
        if outcome.failed:
            exc = outcome.exception()
            if exc is None or not is_transient(exc):
                return False
            self.errors_in_a_row += 1
            if self.errors_in_a_row > self.policy.max_poll_errors:
                return False
            logger.warning("transient error while waiting, will look again: %s", exc)
            return True
        self.errors_in_a_row = 0
        observation: Observation = outcome.result()
        return not observation.run.status.is_terminal


class _stop_at_deadline(stop_base):
    def __init__(self, deadline: _Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.deadline.passed()


class _wait_hint_or_backoff(wait_base):
    def __init__(self, policy: PollPolicy, deadline: _Deadline, rng: random.Random) -> None:
        self.policy = policy
        self.deadline = deadline
        self.backoff = Backoff(
            policy.poll_interval_seconds,
            policy.max_poll_interval_seconds,
            multiplier=policy.backoff_multiplier,
            jitter=policy.jitter,
            rng=rng,
        )

    def __call__(self, retry_state: RetryCallState) -> float:
        policy = self.policy
        delay: float | None = None
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed and policy.honor_server_hints:
            hint = outcome.result().poll_after_seconds
            if hint is not None:
                delay = min(max(hint, 0.0), policy.max_poll_interval_seconds)
        elif outcome is not None and outcome.failed:
            exc = outcome.exception()
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                delay = min(exc.retry_after, policy.max_poll_interval_seconds * 4)
        if delay is None:
            delay = self.backoff(retry_state)
        remaining = self.deadline.remaining()
        return delay if remaining is None else min(delay, remaining)


CANCEL_GRACE_SECONDS = 30.0
"""Longest time spent cancelling a remote run while our own task is being cancelled."""


async def cancel_quietly(cancel: Callable[[], Awaitable[Any]], run: Run, *, reason: str) -> bool:
    """Cancel a remote run, shielded from the caller's own cancellation.

    Prefect cancels tasks through anyio cancel scopes, which re-deliver the cancellation
    at every await; ``asyncio.shield`` alone would let the wait exit before the remote
    cancel is sent. So the cancel runs in a shielded anyio scope, bounded by
    :data:`CANCEL_GRACE_SECONDS`.

    Returns True when the cancel request was accepted. A failure is logged (with the
    backend, the run and the server's answer), never swallowed silently.
    """
    with anyio.move_on_after(CANCEL_GRACE_SECONDS, shield=True) as scope:
        try:
            await cancel()
        except AgentRunsError as exc:
            logger.error("could not cancel %s after %s: %s", run.describe(), reason, exc)
            return False
    if scope.cancelled_caught:
        logger.error(
            "could not cancel %s after %s: no answer within %ss",
            run.describe(),
            reason,
            CANCEL_GRACE_SECONDS,
        )
        return False
    logger.info("cancelled remote %s (%s)", run.describe(), reason)
    return True


async def wait_for_terminal(
    step: Step,
    run: Run,
    policy: PollPolicy,
    *,
    cancel: Callable[[], Awaitable[Any]] | None = None,
    on_change: Callable[[Run], Any] | None = None,
    clock: Clock = timing.monotonic,
    sleep: Sleep = timing.sleep,
    rng: random.Random | None = None,
) -> Run:
    """Observe ``run`` with ``step`` until it is terminal; return its last state.

    Args:
        step: One observation (a poll or a long poll).
        run: The run as last seen (its status may already be terminal).
        policy: Deadline, intervals and cancel behaviour.
        cancel: Cancels the remote run; used on timeout (``cancel_on_timeout``) and when
            this coroutine is cancelled.
        on_change: Called with the run each time its status changes (log on change only);
            sync or async.
        clock: Monotonic clock (default: the engine's, :mod:`prefect_agent_runs.timing`).
        sleep: The sleep between observations (default: the engine's).
        rng: Random source for the jitter.

    Raises:
        RunTimedOut: The deadline passed first (the run was cancelled if asked).
        AgentRunsError: A non-transient error, or too many transient ones in a row.
    """
    if run.status.is_terminal:
        return run
    deadline = _Deadline(policy.timeout_seconds, clock)
    last = run

    async def observe() -> Observation:
        nonlocal last
        observation = await step(deadline.remaining())
        changed = observation.run.status != last.status
        last = observation.run
        if changed and on_change is not None:
            result = on_change(observation.run)
            if inspect.isawaitable(result):
                await result
        return observation

    retrying = AsyncRetrying(
        retry=_retry_until_terminal(policy),
        stop=_stop_at_deadline(deadline),
        wait=_wait_hint_or_backoff(policy, deadline, rng or random.Random()),
        sleep=sleep,
    )
    try:
        try:
            observation: Observation = await retrying(observe)
            return observation.run
        except RetryError as exc:
            if not deadline.passed():
                # stopped by too many transient errors: raise the last one
                exc.reraise()
            cancelled = False
            if policy.cancel_on_timeout and cancel is not None:
                cancelled = await cancel_quietly(cancel, last, reason="timeout_seconds passed")
            assert policy.timeout_seconds is not None  # a deadline passed
            raise RunTimedOut.deadline_passed(
                last, policy.timeout_seconds, cancelled=cancelled
            ) from None
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit):
        if cancel is not None and not last.status.is_terminal:
            await cancel_quietly(cancel, last, reason="the wait was cancelled")
        raise
    except BaseException as exc:
        # Prefect's TerminationSignal (SIGTERM) and other BaseExceptions that are not errors
        if not isinstance(exc, Exception) and cancel is not None and not last.status.is_terminal:
            await cancel_quietly(cancel, last, reason=f"{type(exc).__name__}")
        raise
    finally:
        release_retrying(retrying)


def is_active(status: RunStatus) -> bool:
    """True for a status that may still change (the run may be cancelled)."""
    return not status.is_terminal


def raise_for_outcome(run: Run) -> Run:
    """Return a completed run; raise the matching :class:`RunError` for any other end."""
    if run.status.is_success:
        return run
    if run.status is RunStatus.FAILED:
        raise RunFailed(
            f"{run.backend}: {run.describe()} failed: {run.error or 'no error text'}", run=run
        )
    if run.status in (RunStatus.CANCELLED, RunStatus.INTERRUPTED):
        raise RunCancelled(f"{run.backend}: {run.describe()} was cancelled", run=run)
    if run.status is RunStatus.REQUIRES_ACTION:
        raise RunRequiresAction(f"{run.backend}: {run.describe()} waits for tool outputs", run=run)
    if run.status in (RunStatus.EXPIRED, RunStatus.INCOMPLETE, RunStatus.TIMED_OUT):
        raise RunExpired(f"{run.backend}: {run.describe()} ended as {run.raw_status}", run=run)
    raise RunError(f"{run.backend}: {run.describe()} is not finished", run=run)
