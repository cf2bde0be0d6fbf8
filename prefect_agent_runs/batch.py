"""Run many remote runs in one event loop: find or create, wait, collect, report.

:func:`run_items` is what ``run_batch`` (and any notebook) uses: every item is a
coroutine, at most ``max_concurrency`` items are in flight, and each item is reported the
moment it ends (``on_outcome``), so a Prefect flow spends O(1) task runs on a whole batch.
A failed item never stops the others; it becomes a :class:`RunOutcome` with an error.

:func:`watch_runs` is the monitor alone: wait for runs that already exist, yielding
each as it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from prefect_agent_runs.errors import AgentRunsError, NotFound, RunError
from prefect_agent_runs.models import Run, RunOutcome, RunRequest, ThreadResult
from prefect_agent_runs.waiting import Clock, PollPolicy, raise_for_outcome

__all__ = ["BatchClient", "run_items", "watch_runs"]

logger = logging.getLogger("prefect_agent_runs.batch")


class BatchClient(Protocol):
    """The part of ``RunsClient`` the batch engine needs."""

    backend: Any

    async def create_run(self, request: RunRequest) -> Run:
        """Start a run for one item."""

    async def find_run(self, request: RunRequest) -> Run | None:
        """The run an earlier attempt started for this item, if any."""

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        """Read a run."""

    async def wait_for_run(
        self,
        run: Run | str,
        *,
        thread_id: str | None = None,
        timeout_seconds: float | None = None,
        cancel_on_timeout: bool | None = None,
        policy: PollPolicy | None = None,
        on_change: Callable[[Run], Any] | None = None,
    ) -> Run:
        """Wait until the run is terminal, calling ``on_change`` on each status change."""

    async def get_result(self, run: Run) -> ThreadResult:
        """Read what a completed run wrote to its thread."""

    async def cancel_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        """Cancel a run."""


OutcomeCallback = Callable[[RunOutcome], Awaitable[None] | None]
CreatedCallback = Callable[[str, Run], Awaitable[None] | None]


async def _call(callback: Callable[..., Any] | None, *args: Any) -> None:
    if callback is None:
        return
    result = callback(*args)
    if asyncio.iscoroutine(result):
        await result


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return max(0.0, (b - a).total_seconds())


async def run_items(
    client: BatchClient,
    requests: Sequence[RunRequest],
    *,
    policy: PollPolicy,
    max_concurrency: int = 32,
    collect_results: bool = True,
    wait: bool = True,
    resume: bool = True,
    fresh: bool = False,
    known_runs: dict[str, Run] | None = None,
    on_created: CreatedCallback | None = None,
    on_outcome: OutcomeCallback | None = None,
    on_change: Callable[[str, Run], Any] | None = None,
    clock: Clock = time.monotonic,
) -> list[RunOutcome]:
    """Find or create, wait for and collect every request; outcomes in request order.

    Args:
        client: The backend client.
        requests: The items; each must have a unique ``key``.
        policy: Wait policy for each run (``timeout_seconds`` counts from the item's start).
        max_concurrency: Items in flight at once.
        collect_results: Read what each completed run wrote to its thread.
        wait: Wait for each run to end; False only finds or creates the runs (the outcome
            then holds the run as created, its status not terminal).
        resume: Before creating, look for a run already started for the item's key
            (``find_run``, then ``known_runs``) and adopt it.
        fresh: The batch's key was just generated, so no item can have a run yet: nothing
            is looked up (no ``find_run``, no request) whatever ``resume`` says.
        known_runs: Runs recorded by an earlier attempt (key to run), e.g. from a ledger.
        on_created: Called with (key, run) as soon as a run exists (to persist it).
        on_outcome: Called with each outcome the moment it is known.
        on_change: Called with (key, run) on every status change.
        clock: Monotonic clock.

    Returns:
        One outcome per request, in request order.
    """
    keys = [r.key for r in requests]
    if any(k is None for k in keys) or len(set(keys)) != len(keys):
        raise ValueError("run_items: every request needs a key, unique within the batch")
    slots = asyncio.Semaphore(max_concurrency)
    known = dict(known_runs or {})

    async def one(request: RunRequest) -> RunOutcome:
        key = str(request.key)
        outcome = RunOutcome(key=key)
        exists_since: float | None = None
        async with slots:
            try:
                run: Run | None = None
                if resume and not fresh:
                    run = await client.find_run(request)
                    if run is None and key in known:
                        prior = known[key]
                        try:
                            run = await client.get_run(prior.id, thread_id=prior.thread_id)
                        except NotFound:
                            logger.warning(
                                "%s: item %s: the recorded %s no longer exists; starting it again",
                                client.backend,
                                key,
                                prior.describe(),
                            )
                    if run is not None:
                        outcome.resumed = True
                        logger.info(
                            "%s: item %s: re-attached to %s", client.backend, key, run.describe()
                        )
                if run is None:
                    outcome.attempts += 1
                    run = await client.create_run(request)
                outcome.run = run
                exists_since = clock()
                await _call(on_created, key, run)
                if not wait:
                    return await _finish(outcome)

                def changed(r: Run, _key: str = key) -> None:
                    if on_change is not None:
                        on_change(_key, r)

                run = await client.wait_for_run(run, policy=policy, on_change=changed)
                outcome.run = run
                if run.status.is_success:
                    if collect_results:
                        outcome.result = await client.get_result(run)
                else:
                    raise_for_outcome(run)
            except RunError as exc:
                outcome.run = exc.run
                outcome.error, outcome.error_type = str(exc), type(exc).__name__
            except Exception as exc:
                # any failure of one item (an odd body, a callback bug) is that item's outcome:
                # the batch goes on (DESIGN.md, batch semantics 5)
                if not isinstance(exc, AgentRunsError):
                    logger.exception("%s: item %s failed unexpectedly", client.backend, key)
                outcome.error = str(exc) or type(exc).__name__
                outcome.error_type = type(exc).__name__
            if outcome.run is not None:
                r = outcome.run
                outcome.seconds_queued = _seconds(r.created_at, r.started_at)
                if exists_since is not None and r.status.is_terminal:
                    # measured here (monotonic): servers' timestamps may be whole seconds
                    outcome.seconds_running = round(clock() - exists_since, 3)
        return await _finish(outcome)

    async def _finish(outcome: RunOutcome) -> RunOutcome:
        await _call(on_outcome, outcome)
        return outcome

    return list(await asyncio.gather(*(one(r) for r in requests)))


async def watch_runs(
    client: BatchClient,
    runs: Iterable[Run],
    *,
    policy: PollPolicy,
    max_concurrency: int = 32,
) -> AsyncIterator[Run | RunError | AgentRunsError]:
    """Wait for existing runs in one event loop; yield each as it ends (or its error).

    Args:
        client: The backend client.
        runs: The runs to watch.
        policy: Wait policy for each run.
        max_concurrency: Runs watched at once.
    """
    slots = asyncio.Semaphore(max_concurrency)

    async def one(run: Run) -> Run | AgentRunsError:
        async with slots:
            try:
                return await client.wait_for_run(run, policy=policy)
            except AgentRunsError as exc:
                return exc

    tasks = [asyncio.ensure_future(one(r)) for r in runs]
    try:
        for finished in asyncio.as_completed(tasks):
            yield await finished
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
