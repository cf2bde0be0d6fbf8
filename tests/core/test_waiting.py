"""The wait engine, driven by a fake clock: no test sleeps for real."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest

from prefect_agent_runs.errors import (
    AgentRunsError,
    ApiError,
    BadRequest,
    NotFound,
    RateLimited,
    RunCancelled,
    RunError,
    RunExpired,
    RunFailed,
    RunRequiresAction,
    RunTimedOut,
    ServerError,
    TransportError,
)
from prefect_agent_runs.models import Run, RunStatus
from prefect_agent_runs.waiting import (
    Observation,
    PollPolicy,
    is_transient,
    raise_for_outcome,
    wait_for_terminal,
)

Q, R, C, F = RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.FAILED


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def run_with(status: RunStatus, run_id: str = "r1", error: str | None = None) -> Run:
    return Run(
        id=run_id,
        thread_id="t1",
        status=status,
        raw_status=status.value,
        backend="fake",
        error=error,
    )


class Steps:
    """A step that plays a script: statuses, (status, hint) pairs, or exceptions.

    Once the script is used up it repeats its last entry.
    """

    def __init__(self, clock: FakeClock, script: list[Any]) -> None:
        self.clock = clock
        self.script = list(script)
        self.calls: list[tuple[float, float | None]] = []

    async def __call__(self, remaining: float | None) -> Observation:
        self.calls.append((self.clock.now, remaining))
        entry = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(entry, BaseException):
            raise entry
        if isinstance(entry, tuple):
            status, hint = entry
            return Observation(run_with(status), poll_after_seconds=hint)
        return Observation(run_with(entry))


class Canceller:
    def __init__(self, error: AgentRunsError | None = None) -> None:
        self.calls = 0
        self.error = error

    async def __call__(self) -> Run:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return run_with(RunStatus.CANCELLING)


def policy(**kwargs: Any) -> PollPolicy:
    options: dict[str, Any] = {
        "poll_interval_seconds": 1.0,
        "max_poll_interval_seconds": 10.0,
        "backoff_multiplier": 2.0,
        "jitter": 0.0,
    }
    options.update(kwargs)
    return PollPolicy(**options)


async def wait(
    clock: FakeClock, step: Steps, pol: PollPolicy, start: RunStatus = Q, **kwargs: Any
) -> Run:
    return await wait_for_terminal(
        step, run_with(start), pol, clock=clock, sleep=clock.sleep, **kwargs
    )


# -- policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_seconds": -1},
        {"poll_interval_seconds": 0},
        {"poll_interval_seconds": -1},
        {"poll_interval_seconds": 5, "max_poll_interval_seconds": 4},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_poll_policy_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PollPolicy(**kwargs)


def test_poll_policy_defaults_and_overrides() -> None:
    base = PollPolicy()
    assert base.timeout_seconds is None
    assert base.cancel_on_timeout is True
    assert PollPolicy(timeout_seconds=0).timeout_seconds == 0
    changed = base.with_overrides(timeout_seconds=5, cancel_on_timeout=False, jitter=None)
    assert changed.timeout_seconds == 5
    assert changed.cancel_on_timeout is False
    assert changed.jitter == base.jitter
    assert base.timeout_seconds is None  # frozen copy, original unchanged


# -- backoff and hints -------------------------------------------------------------------


async def test_backoff_grows_and_caps() -> None:
    clock = FakeClock()
    step = Steps(clock, [Q, Q, R, R, R, R, R, C])
    run = await wait(clock, step, policy(max_poll_interval_seconds=6.0))
    assert run.status is C
    assert clock.sleeps == [1.0, 2.0, 4.0, 6.0, 6.0, 6.0, 6.0]
    assert len(step.calls) == 8
    assert all(remaining is None for _, remaining in step.calls)


async def test_jitter_only_shortens_intervals() -> None:
    clock = FakeClock()
    step = Steps(clock, [R] * 20 + [C])
    pol = policy(jitter=0.5, backoff_multiplier=1.0, poll_interval_seconds=2.0)
    await wait(clock, step, pol, rng=random.Random(7))
    assert len(clock.sleeps) == 20
    assert all(1.0 <= s <= 2.0 for s in clock.sleeps)
    assert len(set(clock.sleeps)) > 1


async def test_server_hint_is_used() -> None:
    clock = FakeClock()
    step = Steps(clock, [(R, 0.25), (R, 0.5), (R, 100.0), (C, None)])
    await wait(clock, step, policy(max_poll_interval_seconds=10.0))
    # the hint wins over the backoff; a hint above the cap is capped
    assert clock.sleeps == [0.25, 0.5, 10.0]


async def test_server_hint_ignored_when_asked() -> None:
    clock = FakeClock()
    step = Steps(clock, [(R, 0.25), (R, 0.25), (C, None)])
    await wait(clock, step, policy(honor_server_hints=False))
    assert clock.sleeps == [1.0, 2.0]


async def test_already_terminal_does_not_observe() -> None:
    clock = FakeClock()
    step = Steps(clock, [R])
    run = await wait(clock, step, policy(), start=F)
    assert run.status is F
    assert step.calls == []


async def test_remaining_time_is_passed_to_the_step() -> None:
    clock = FakeClock()
    step = Steps(clock, [R, R, C])
    await wait(clock, step, policy(timeout_seconds=30))
    assert [remaining for _, remaining in step.calls] == [30.0, 29.0, 27.0]


# -- deadline ------------------------------------------------------------------------------


async def test_deadline_raises_and_cancels_once() -> None:
    clock = FakeClock()
    start = clock.now
    step = Steps(clock, [R])
    cancel = Canceller()
    pol = policy(timeout_seconds=10, poll_interval_seconds=3, backoff_multiplier=1.0)
    with pytest.raises(RunTimedOut) as info:
        await wait(clock, step, pol, cancel=cancel)
    assert clock.now - start == pytest.approx(10.0)
    assert clock.sleeps == [3.0, 3.0, 3.0, 1.0]  # never sleeps past the deadline
    assert cancel.calls == 1
    assert info.value.cancelled is True
    assert info.value.run.status is R
    assert "timeout_seconds=10" in str(info.value)
    assert "fake" in str(info.value)
    assert "r1" in str(info.value)
    assert "was cancelled" in str(info.value)


async def test_deadline_without_cancel_on_timeout() -> None:
    clock = FakeClock()
    step = Steps(clock, [R])
    cancel = Canceller()
    with pytest.raises(RunTimedOut) as info:
        await wait(clock, step, policy(timeout_seconds=5, cancel_on_timeout=False), cancel=cancel)
    assert cancel.calls == 0
    assert info.value.cancelled is False
    assert "goes on" in str(info.value)


async def test_deadline_cancel_failure_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    step = Steps(clock, [R])
    cancel = Canceller(ServerError("fake: cancel failed: HTTP 500", status_code=500))
    caplog.set_level(logging.ERROR, logger="prefect_agent_runs.waiting")
    with pytest.raises(RunTimedOut) as info:
        await wait(clock, step, policy(timeout_seconds=2), cancel=cancel)
    assert cancel.calls == 1
    assert info.value.cancelled is False
    assert any("could not cancel" in r.getMessage() for r in caplog.records)


async def test_zero_timeout_observes_once() -> None:
    clock = FakeClock()
    step = Steps(clock, [R])
    with pytest.raises(RunTimedOut):
        await wait(clock, step, policy(timeout_seconds=0), cancel=Canceller())
    assert len(step.calls) == 1
    assert clock.sleeps == []


async def test_finishing_at_the_deadline_is_success() -> None:
    clock = FakeClock()
    step = Steps(clock, [R, R, C])
    cancel = Canceller()
    pol = policy(timeout_seconds=2, backoff_multiplier=1.0)
    run = await wait(clock, step, pol, cancel=cancel)
    assert run.status is C
    assert cancel.calls == 0


# -- errors while waiting -------------------------------------------------------------------


def server_error() -> ServerError:
    return ServerError("fake: get run r1 failed: HTTP 502", status_code=502, backend="fake")


def transport_error() -> TransportError:
    return TransportError("fake: get run r1 failed: ReadTimeout", backend="fake")


async def test_transient_errors_are_tolerated() -> None:
    clock = FakeClock()
    step = Steps(clock, [server_error(), transport_error(), R, server_error(), server_error(), C])
    run = await wait(clock, step, policy(max_poll_errors=2))
    assert run.status is C
    assert len(step.calls) == 6


@pytest.mark.parametrize("make_error", [server_error, transport_error])
async def test_too_many_transient_errors_are_raised(
    make_error: Callable[[], AgentRunsError],
) -> None:
    clock = FakeClock()
    error = make_error()
    step = Steps(clock, [R, error])
    cancel = Canceller()
    with pytest.raises(type(error)) as info:
        await wait(clock, step, policy(max_poll_errors=3), cancel=cancel)
    assert info.value is error
    assert len(step.calls) == 1 + 4  # one good look, then max_poll_errors + 1 errors
    assert cancel.calls == 0  # the remote run carries on: we only lost sight of it


@pytest.mark.parametrize(
    "error",
    [
        NotFound("fake: run r1 not found", status_code=404),
        BadRequest("fake: bad", status_code=400),
        ApiError("fake: teapot", status_code=418),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_non_transient_error_is_raised_at_once(error: Exception) -> None:
    clock = FakeClock()
    step = Steps(clock, [error])
    with pytest.raises(type(error)):
        await wait(clock, step, policy(), cancel=Canceller())
    assert len(step.calls) == 1
    assert clock.sleeps == []


async def test_rate_limited_waits_retry_after() -> None:
    clock = FakeClock()
    step = Steps(clock, [RateLimited("slow", status_code=429, retry_after=7.0), C])
    await wait(clock, step, policy())
    assert clock.sleeps == [7.0]


async def test_transient_error_at_the_deadline_is_a_timeout() -> None:
    clock = FakeClock()
    step = Steps(clock, [R, server_error()])
    cancel = Canceller()
    with pytest.raises(RunTimedOut):
        await wait(clock, step, policy(timeout_seconds=4, max_poll_errors=100), cancel=cancel)
    assert cancel.calls == 1


def test_is_transient() -> None:
    assert is_transient(server_error())
    assert is_transient(transport_error())
    assert is_transient(RateLimited("x", status_code=429))
    assert is_transient(ApiError("x", status_code=408))
    assert not is_transient(NotFound("x", status_code=404))
    assert not is_transient(BadRequest("x", status_code=400))
    assert not is_transient(ValueError("x"))


# -- on_change -------------------------------------------------------------------------------


async def test_on_change_only_on_status_changes() -> None:
    clock = FakeClock()
    step = Steps(clock, [Q, Q, server_error(), R, R, R, C])
    seen: list[RunStatus] = []
    await wait(clock, step, policy(), on_change=lambda run: seen.append(run.status))
    assert seen == [R, C]


# -- cancellation of the waiting task ------------------------------------------------------


async def test_cancelling_the_wait_cancels_the_remote_run() -> None:
    clock = FakeClock()
    events: list[str] = []
    looked = asyncio.Event()

    async def step(remaining: float | None) -> Observation:
        looked.set()
        events.append("look")
        await asyncio.Event().wait()  # blocks until cancelled
        raise AssertionError("unreachable")

    async def cancel() -> None:
        events.append("cancel")

    task = asyncio.create_task(
        wait_for_terminal(
            step, run_with(R), policy(), cancel=cancel, clock=clock, sleep=clock.sleep
        )
    )
    await looked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["look", "cancel"]


async def test_cancelling_during_the_sleep_cancels_the_remote_run() -> None:
    sleeping = asyncio.Event()
    events: list[str] = []

    async def blocking_sleep(seconds: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    async def step(remaining: float | None) -> Observation:
        return Observation(run_with(R))

    async def cancel() -> None:
        events.append("cancel")
        await asyncio.sleep(0)  # a real await inside the shielded cancel
        events.append("cancel done")

    task = asyncio.create_task(
        wait_for_terminal(step, run_with(Q), policy(), cancel=cancel, sleep=blocking_sleep)
    )
    await sleeping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["cancel", "cancel done"]


async def test_cancelling_after_terminal_does_not_cancel_remote() -> None:
    """The last look said terminal: nothing remote to cancel (no extra request)."""
    events: list[str] = []

    async def step(remaining: float | None) -> Observation:
        return Observation(run_with(C))

    async def cancel() -> None:
        events.append("cancel")

    clock = FakeClock()
    run = await wait_for_terminal(step, run_with(R), policy(), cancel=cancel, clock=clock)
    assert run.status is C
    assert events == []


# -- raise_for_outcome ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (RunStatus.FAILED, RunFailed),
        (RunStatus.CANCELLED, RunCancelled),
        (RunStatus.INTERRUPTED, RunCancelled),
        (RunStatus.EXPIRED, RunExpired),
        (RunStatus.INCOMPLETE, RunExpired),
        (RunStatus.TIMED_OUT, RunExpired),
        (RunStatus.REQUIRES_ACTION, RunRequiresAction),
        (RunStatus.RUNNING, RunError),
        (RunStatus.UNKNOWN, RunError),
    ],
)
def test_raise_for_outcome(status: RunStatus, error: type[RunError]) -> None:
    run = run_with(status, error="model overloaded")
    with pytest.raises(error) as info:
        raise_for_outcome(run)
    assert type(info.value) is error
    assert info.value.run is run
    assert info.value.backend == "fake"
    assert "r1" in str(info.value)
    assert "t1" in str(info.value)


def test_raise_for_outcome_success_and_failure_text() -> None:
    done = run_with(C)
    assert raise_for_outcome(done) is done
    with pytest.raises(RunFailed, match="model overloaded"):
        raise_for_outcome(run_with(F, error="model overloaded"))
    with pytest.raises(RunFailed, match="no error text"):
        raise_for_outcome(run_with(F))


async def test_remote_cancel_completes_inside_an_anyio_cancel_scope() -> None:
    import anyio

    events: list[str] = []
    looked = asyncio.Event()

    async def step(remaining: float | None) -> Observation:
        looked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def cancel() -> None:
        events.append("cancel start")
        for _ in range(3):
            await asyncio.sleep(0)
        events.append("cancel done")

    with anyio.CancelScope() as scope:

        async def cancel_soon() -> None:
            await looked.wait()
            scope.cancel()

        helper = asyncio.create_task(cancel_soon())
        try:
            await wait_for_terminal(step, run_with(R), policy(), cancel=cancel)
        finally:
            events.append("wait exited")
    await helper
    assert events[:3] == ["cancel start", "cancel done", "wait exited"]
