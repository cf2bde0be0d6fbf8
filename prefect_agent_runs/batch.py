"""Run many remote runs in one event loop: find or create, wait, collect, report.

:func:`run_items` is what ``run_batch`` (and any notebook) uses. It is a fixed pool of
workers over an iterator (sync or async) of requests, never one coroutine per item:

* ``max_concurrency`` bounds the requests the engine sends at once (find, create, read,
  collect): ``max_concurrency`` create workers pull the next item, find or create its run
  and hand it to the watcher, so a create never waits for an earlier run to end;
* ``max_active_runs`` bounds the remote runs alive at once (a worker takes a slot before
  it creates, the slot is freed when the run ends). ``None`` lets the platform queue
  every run; the default depends on the backend (:func:`default_max_active_runs`);
* watching: a backend with the capability ``"bulk_watch"`` (:data:`BULK_WATCH`) answers
  for many runs in one request (:class:`BulkWatcher`): one sweeper asks it about every run
  alive, only while some run is alive. The sweeps follow the ends: every
  :data:`SWEEP_FLOOR_SECONDS` while runs end, then slower the longer none has ended
  (:data:`SWEEP_QUIET_SHARE` of the quiet time, at most the policy's
  ``max_poll_interval_seconds``), so an end is seen within ~50 ms while a batch is busy and
  a batch of hour-long runs costs a few hundred sweeps an hour, whatever N. Otherwise
  ``max_concurrency`` watchers wait for one run each (``wait_for_run``: push where the
  backend has it, else polling), first come first served;
* watching on create: a backend with the capability ``"watch_on_create"``
  (:data:`WATCH_ON_CREATE`) creates a run with a request that stays open and reports the
  run's end (:class:`CreateWatcher`, e.g. the Assistants create with ``stream: true``). The
  create holds one of the ``max_concurrency`` slots until its run exists (``on_created``
  fires then); the rest of the stream is the run's watch and counts against
  ``max_active_runs`` (one open stream per run alive), so no watcher polls it. There are
  then ``max(max_concurrency, max_active_runs)`` create workers, each holding an item
  until its run ends; the client's connection pool must hold ``max_active_runs`` streams
  plus ``max_concurrency`` requests (``run_batch`` sizes it so). Used whenever runs alive
  are bounded (``max_active_runs`` not None): an unbounded number of open streams is not.

Each item is reported the moment it ends (``on_outcome``), so a Prefect flow spends O(1)
task runs on a whole batch. A failed item never stops the others; it becomes a
:class:`RunOutcome` with an error.

:func:`watch_runs` is the monitor alone: wait for runs that already exist, yielding
each as it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import anyio

from prefect_agent_runs import timing
from prefect_agent_runs._compact import Compactor
from prefect_agent_runs._heap import batch_gc
from prefect_agent_runs.errors import (
    AgentRunsError,
    NotFound,
    RunError,
    RunTimedOut,
    ValidationError,
)
from prefect_agent_runs.models import Run, RunOutcome, RunRequest, ThreadResult
from prefect_agent_runs.timing import Clock, Sleep
from prefect_agent_runs.waiting import PollPolicy, raise_for_outcome

__all__ = [
    "BULK_WATCH",
    "DEFAULT",
    "QUEUES_RUNS",
    "WATCH_ON_CREATE",
    "BatchClient",
    "BulkWatcher",
    "CreateWatcher",
    "default_max_active_runs",
    "run_items",
    "watch_runs",
]

logger = logging.getLogger("prefect_agent_runs.batch")

BULK_WATCH = "bulk_watch"
"""The capability of a backend that implements :class:`BulkWatcher` (``watch_many``)."""

DEFAULT: Any = "default"
"""``max_active_runs=DEFAULT``: the backend's default (:func:`default_max_active_runs`)."""

BOUNDED_ACTIVE_RUNS = 256
"""Runs alive at once on a platform that does not queue them for us (or charges per run)."""

SWEEP_FLOOR_SECONDS = 0.05
"""Shortest time between two bulk sweeps (while runs are ending)."""

SWEEP_HOT = 1000
"""Runs asked about by every sweep: the oldest alive (a queueing server runs them first);
with more alive, every k-th sweep asks about all of them (k = alive / SWEEP_HOT)."""

SWEEP_QUIET_SHARE = 0.05
"""A bulk sweep waits this share of the time since the last end seen (or the first run)."""


QUEUES_RUNS = "queues_runs"
"""The capability of a backend whose server queues every run it accepts (LangGraph): a batch
lets the server hold all of its runs, bounding only the requests (``max_active_runs=None``)."""


WATCH_ON_CREATE = "watch_on_create"
"""The capability of a backend that implements :class:`CreateWatcher` (``create_and_wait``):
its create request stays open and reports the run's end (a create-time event stream)."""


def default_max_active_runs(capabilities: Collection[str]) -> int | None:
    """The default ``max_active_runs`` of a backend, from its capabilities.

    Args:
        capabilities: The backend client's ``capabilities``.

    Returns:
        None when the server queues every run (:data:`QUEUES_RUNS`), else
        :data:`BOUNDED_ACTIVE_RUNS`.
    """
    return None if QUEUES_RUNS in capabilities else BOUNDED_ACTIVE_RUNS


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


@runtime_checkable
class BulkWatcher(Protocol):
    """A backend that reports on many runs in one request (capability ``"bulk_watch"``).

    LangGraph, for example, answers ``POST /threads/search`` by the batch's metadata and
    status with the finished threads and their values.
    """

    async def watch_many(self, runs: Sequence[Run]) -> Sequence[Run]:
        """One sweep: the current state of the given runs.

        Args:
            runs: The runs alive (at most a few thousand per call).

        Returns:
            The runs whose state the server reported (at least every one that ended; runs
            left out are taken as unchanged). May take up to a backend-chosen time (a
            long poll), never longer than the policy's poll interval cap.
        """
        ...


@runtime_checkable
class CreateWatcher(Protocol):
    """A backend whose create can watch its run to the end (capability ``"watch_on_create"``).

    The Assistants API, for example, streams a run's events in the answer to its create
    (``stream: true``): the end of the run and the messages it wrote arrive on the one
    request, with no polls and no messages list.
    """

    async def create_and_wait(
        self,
        request: RunRequest,
        *,
        policy: PollPolicy | None = None,
        on_created: Callable[[Run], Awaitable[None] | None] | None = None,
        on_change: Callable[[Run], Any] | None = None,
        capture_result: bool = True,
    ) -> Run:
        """Create the run (duplicate-safe, as ``create_run``) and wait until it is terminal.

        Args:
            request: What to start.
            policy: The wait policy (``timeout_seconds`` counts from when the run exists;
                the remote run is cancelled on timeout and when this coroutine is cancelled).
            on_created: Called with the run as soon as it exists, before the wait.
            on_change: Called with the run on each status change.
            capture_result: Keep what the run wrote (when the create's answer carried it)
                for the next ``get_result(run)``.

        Returns:
            The run in its terminal state.
        """
        ...


OutcomeCallback = Callable[[RunOutcome], Awaitable[None] | None]
CreatedCallback = Callable[[str, Run], Awaitable[None] | None]
CreatingCallback = Callable[[str, RunRequest], Awaitable[None] | None]


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


def _record_error(outcome: RunOutcome, exc: BaseException, backend: str) -> None:
    if isinstance(exc, RunError):
        outcome.run = exc.run
    elif not isinstance(exc, AgentRunsError):
        # an odd body, a callback bug: that item's outcome, the batch goes on (semantics 5)
        logger.error("%s: item %s failed unexpectedly", backend, outcome.key, exc_info=exc)
    outcome.error = str(exc) or type(exc).__name__
    outcome.error_type = type(exc).__name__


async def _join(tasks: Sequence[asyncio.Future[None]]) -> None:
    """Wait for every task; raise the first one's error. Unlike ``gather``, being cancelled
    here does not cancel the tasks (the caller cancels each once)."""
    if not tasks:
        return
    await asyncio.wait(tasks)
    for task in tasks:
        task.result()


@dataclass(eq=False)
class _Item:
    request: RunRequest
    outcome: RunOutcome
    since: float | None = None


async def _aiter(
    requests: Iterable[RunRequest] | AsyncIterable[RunRequest],
) -> AsyncIterator[RunRequest]:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request


class _Engine:
    def __init__(
        self,
        client: BatchClient,
        *,
        policy: PollPolicy,
        max_concurrency: int,
        max_active_runs: int | None,
        collect_results: bool,
        wait: bool,
        resume: bool,
        known_runs: dict[str, Run] | None,
        on_creating: CreatingCallback | None,
        on_created: CreatedCallback | None,
        on_outcome: OutcomeCallback | None,
        on_change: Callable[[str, Run], Any] | None,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self.client = client
        self.backend = str(client.backend)
        self.policy = policy
        self.workers = max_concurrency
        self.collect_results = collect_results
        self.wait = wait
        self.resume = resume
        self.known = dict(known_runs or {})
        self.on_creating, self.on_created = on_creating, on_created
        self.on_outcome, self.on_change = on_outcome, on_change
        self.clock, self.sleep = clock, sleep
        self.slots = asyncio.Semaphore(max_concurrency)
        self.active = asyncio.Semaphore(max_active_runs) if max_active_runs else None
        capabilities: frozenset[str] = getattr(client, "capabilities", frozenset())
        self.bulk = wait and BULK_WATCH in capabilities and isinstance(client, BulkWatcher)
        # A run watched on its create's request holds an open stream while it lives: only
        # with a bound on the runs alive (the stream counts against it, not the slots).
        self.watch_on_create = (
            wait
            and WATCH_ON_CREATE in capabilities
            and isinstance(client, CreateWatcher)
            and max_active_runs is not None
        )
        self.create_workers = (
            max(max_concurrency, max_active_runs or 0) if self.watch_on_create else max_concurrency
        )
        self.outcomes: list[RunOutcome] = []
        self.compactor = Compactor()
        self.seen: set[str] = set()
        self.pull_lock = asyncio.Lock()
        self.watch_queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self.watching: dict[str, _Item] = {}
        self.wake = asyncio.Event()
        self.creating_done = False

    # -- the pool ---------------------------------------------------------------------------

    async def run(self, source: AsyncIterator[RunRequest]) -> list[RunOutcome]:
        tasks = [
            asyncio.ensure_future(self._create_worker(source)) for _ in range(self.create_workers)
        ]
        watchers: list[asyncio.Future[None]] = []
        if self.bulk:
            watchers.append(asyncio.ensure_future(self._sweeper()))
        elif self.wait:
            watchers += [asyncio.ensure_future(self._watcher()) for _ in range(self.workers)]
        try:
            await _join(tasks)
            self.creating_done = True
            self.wake.set()
            for _ in range(len(watchers)):
                self.watch_queue.put_nowait(None)
            await _join(watchers)
        finally:
            # Each task is cancelled once (a second cancel would cut its cancel of its remote
            # run short), and waited for shielded: under an anyio cancel scope (Prefect's
            # cancellation) this await is cancelled again at once, and the client would be
            # closed under those cancels (each bounded by waiting.CANCEL_GRACE_SECONDS).
            for task in [*tasks, *watchers]:
                if not task.done():
                    task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, *watchers, return_exceptions=True)
        return self.outcomes

    async def _next(self, source: AsyncIterator[RunRequest]) -> _Item | None:
        async with self.pull_lock:
            try:
                request = await source.__anext__()
            except StopAsyncIteration:
                return None
            item = _Item(request, RunOutcome(key=str(request.key)))
            self.outcomes.append(item.outcome)
            return item

    async def _create_worker(self, source: AsyncIterator[RunRequest]) -> None:
        while True:
            if self.active is not None:
                await self.active.acquire()
            item = await self._next(source)
            if item is None:
                if self.active is not None:
                    self.active.release()
                return
            if not await self._start(item) or not self.wait:
                await self._finish(item)
            elif item.outcome.run is not None and item.outcome.run.status.is_terminal:
                await self._complete(item, item.outcome.run)
            elif self.bulk:
                self.watching[item.outcome.key] = item
                self.wake.set()
            else:
                self.watch_queue.put_nowait(item)

    # -- one item ---------------------------------------------------------------------------

    async def _start(self, item: _Item) -> bool:
        """Find or create the item's run; False when the item already has its outcome."""
        request, outcome = item.request, item.outcome
        key = outcome.key
        try:
            if request.key is None or key in self.seen:
                raise ValidationError(
                    f"item {key!r}: every request needs a key, unique within the batch "
                    "(nothing was sent for this one)"
                )
            self.seen.add(key)
            run: Run | None = None
            if self.resume:
                async with self.slots:
                    run = await self.client.find_run(request)
                prior = self.known.pop(key, None)
                if run is None and prior is not None:
                    try:
                        async with self.slots:
                            run = await self.client.get_run(prior.id, thread_id=prior.thread_id)
                    except NotFound:
                        logger.warning(
                            "%s: item %s: the recorded %s no longer exists; starting it again",
                            self.backend,
                            key,
                            prior.describe(),
                        )
                if run is not None:
                    outcome.resumed = True
                    logger.debug(
                        "%s: item %s: re-attached to %s", self.backend, key, run.describe()
                    )
            if run is None and self.watch_on_create:
                outcome.attempts += 1
                await _call(self.on_creating, key, request)
                await self._create_and_wait(item)
                return True
            if run is None:
                outcome.attempts += 1
                await _call(self.on_creating, key, request)
                async with self.slots:
                    run = await self.client.create_run(request)
            await self._created(item, run)
        except Exception as exc:
            _record_error(outcome, exc, self.backend)
            return False
        return True

    async def _created(self, item: _Item, run: Run) -> None:
        item.outcome.run = run
        item.since = self.clock()
        await _call(self.on_created, item.outcome.key, run)

    async def _create_and_wait(self, item: _Item) -> None:
        """Create the item's run and wait for its end on the create's own request.

        The create holds a ``max_concurrency`` slot until the run exists; the stream that
        goes on (the run's watch) is bounded by ``max_active_runs`` (the caller's slot).
        """
        watcher = self.client
        assert isinstance(watcher, CreateWatcher)
        key = item.outcome.key
        await self.slots.acquire()
        held = True

        async def created(run: Run) -> None:
            nonlocal held
            if held:
                held = False
                self.slots.release()
            await self._created(item, run)

        try:
            item.outcome.run = await watcher.create_and_wait(
                item.request,
                policy=self.policy,
                on_created=created,
                on_change=lambda r: self._changed(key, r),
                capture_result=self.collect_results,
            )
        finally:
            if held:
                self.slots.release()

    def _changed(self, key: str, run: Run) -> None:
        if self.on_change is not None:
            self.on_change(key, run)

    async def _complete(self, item: _Item, run: Run, *, bounded: bool = True) -> None:
        """The run ended: collect its result (or its error) and report the item.

        ``bounded=False`` (the bulk sweeper): the result is read without waiting for one of
        the ``max_concurrency`` slots, which the creates hold while a batch starts (a
        bulk watcher answers results with the sweep; the transport still bounds requests).
        """
        outcome = item.outcome
        outcome.run = run
        try:
            if run.status.is_success:
                if self.collect_results and bounded:
                    async with self.slots:
                        outcome.result = await self.client.get_result(run)
                elif self.collect_results:
                    outcome.result = await self.client.get_result(run)
            else:
                raise_for_outcome(run)
        except Exception as exc:
            _record_error(outcome, exc, self.backend)
        await self._finish(item)

    async def _finish(self, item: _Item) -> None:
        outcome = item.outcome
        if outcome.run is not None:
            r = outcome.run
            outcome.seconds_queued = _seconds(r.created_at, r.started_at)
            if item.since is not None and r.status.is_terminal:
                # measured here (monotonic): servers' timestamps may be whole seconds
                outcome.seconds_running = round(self.clock() - item.since, 3)
        self.compactor.outcome(outcome)  # kept to the batch's end: what repeats, once
        if self.active is not None:
            self.active.release()
        try:
            await _call(self.on_outcome, outcome)
        except Exception:
            logger.exception(
                "%s: the outcome callback failed for item %s", self.backend, outcome.key
            )

    def _policy_for(self, item: _Item) -> PollPolicy:
        """The policy with the time left of the item's ``timeout_seconds``."""
        if self.policy.timeout_seconds is None or item.since is None:
            return self.policy
        left = self.policy.timeout_seconds - (self.clock() - item.since)
        return self.policy.with_overrides(timeout_seconds=max(0.0, left))

    # -- watching one run at a time ---------------------------------------------------------

    async def _watcher(self) -> None:
        while (item := await self.watch_queue.get()) is not None:
            run = item.outcome.run
            assert run is not None
            key = item.outcome.key
            try:
                run = await self.client.wait_for_run(
                    run,
                    policy=self._policy_for(item),
                    on_change=lambda r, _key=key: self._changed(_key, r),  # type: ignore[misc]
                )
            except RunTimedOut as exc:
                # the wait had what was left of the item's deadline: name the deadline
                assert self.policy.timeout_seconds is not None
                timed_out = RunTimedOut.deadline_passed(
                    exc.run, self.policy.timeout_seconds, cancelled=exc.cancelled
                )
                _record_error(item.outcome, timed_out, self.backend)
                await self._finish(item)
                continue
            except Exception as exc:
                _record_error(item.outcome, exc, self.backend)
                await self._finish(item)
                continue
            await self._complete(item, run)

    # -- watching many runs at once ---------------------------------------------------------

    async def _sweeper(self) -> None:
        watcher = self.client
        assert isinstance(watcher, BulkWatcher)
        errors = 0
        tick = 0
        last_end: float | None = None
        while not (self.creating_done and not self.watching):
            if not self.watching:
                self.wake.clear()
                await self.wake.wait()
                last_end = None
                continue
            started = self.clock()
            if last_end is None:
                last_end = started
            items = list(self.watching.values())
            rounds = -(-len(items) // SWEEP_HOT)
            tick += 1
            if tick % rounds:
                items = items[:SWEEP_HOT]  # the oldest; the whole set every `rounds` sweeps
            try:
                # not behind the creates' max_concurrency slots: one request, whatever N,
                # and an end must not wait for a batch's creates (the transport bounds it)
                states = await watcher.watch_many([i.outcome.run for i in items])  # type: ignore[misc]
                errors = 0
            except AgentRunsError as exc:
                errors += 1
                if errors > self.policy.max_poll_errors:
                    for item in items:
                        self.watching.pop(item.outcome.key, None)
                        _record_error(item.outcome, exc, self.backend)
                        await self._finish(item)
                    errors = 0
                states = []
            by_id = {r.id: r for r in states}
            deadline = self.policy.timeout_seconds is not None
            for item in items:
                state = by_id.get(item.outcome.run.id)  # type: ignore[union-attr]
                if state is not None or deadline:  # else nothing to do for this item
                    await self._observe(item, state)
            if any(r.status.is_terminal for r in states):
                last_end = started
            quiet = max(0.0, started - last_end)
            interval = min(
                max(SWEEP_FLOOR_SECONDS, SWEEP_QUIET_SHARE * quiet),
                max(SWEEP_FLOOR_SECONDS, self.policy.max_poll_interval_seconds),
            )
            await self.sleep(max(0.0, interval - (self.clock() - started)))

    async def _observe(self, item: _Item, run: Run | None) -> None:
        key, previous = item.outcome.key, item.outcome.run
        assert previous is not None
        if run is not None and (
            run.status != previous.status or run.raw_status != previous.raw_status
        ):
            item.outcome.run = run
            self._changed(key, run)
        current = item.outcome.run
        assert current is not None
        if current.status.is_terminal:
            self.watching.pop(key, None)
            await self._complete(item, current, bounded=False)
            return
        timeout = self.policy.timeout_seconds
        if timeout is not None and item.since is not None and self.clock() - item.since >= timeout:
            self.watching.pop(key, None)
            cancelled = False
            if self.policy.cancel_on_timeout:
                try:
                    async with self.slots:
                        await self.client.cancel_run(current.id, thread_id=current.thread_id)
                    cancelled = True
                except AgentRunsError as exc:
                    logger.warning(
                        "%s: could not cancel %s: %s", self.backend, current.describe(), exc
                    )
            timed_out = RunTimedOut.deadline_passed(current, timeout, cancelled=cancelled)
            _record_error(item.outcome, timed_out, self.backend)
            await self._finish(item)


async def run_items(
    client: BatchClient,
    requests: Iterable[RunRequest] | AsyncIterable[RunRequest],
    *,
    policy: PollPolicy,
    max_concurrency: int = 32,
    max_active_runs: int | None = DEFAULT,
    collect_results: bool = True,
    wait: bool = True,
    resume: bool = True,
    fresh: bool = False,
    known_runs: dict[str, Run] | None = None,
    on_creating: CreatingCallback | None = None,
    on_created: CreatedCallback | None = None,
    on_outcome: OutcomeCallback | None = None,
    on_change: Callable[[str, Run], Any] | None = None,
    clock: Clock = timing.monotonic,
    sleep: Sleep = timing.sleep,
) -> list[RunOutcome]:
    """Find or create, wait for and collect every request; outcomes in request order.

    Args:
        client: The backend client.
        requests: The items, a sequence or a (sync or async) iterator read as the workers
            need more; each must have a ``key``, unique within the batch. A sequence is
            checked before anything is sent (``ValueError``); an item of an iterator with a
            missing or repeated key becomes a ``ValidationError`` outcome.
        policy: Wait policy for each run (``timeout_seconds`` counts from the moment the
            item's run exists).
        max_concurrency: Requests the engine sends at once (finds, creates, reads,
            results), and runs watched one by one at once when the backend has neither
            ``"bulk_watch"`` nor ``"watch_on_create"`` (with ``"watch_on_create"`` and a
            bound on ``max_active_runs``, each run is watched on its create's open request,
            which counts against ``max_active_runs`` once the run exists).
        max_active_runs: Remote runs alive at once; None: no bound (the platform queues
            them); :data:`DEFAULT`: the backend's (:func:`default_max_active_runs`).
        collect_results: Read what each completed run wrote to its thread.
        wait: Wait for each run to end; False only finds or creates the runs.
        resume: Before creating, look for a run already started for the item's key.
        fresh: The batch key was just generated: no item can have a run, nothing is looked up.
        known_runs: Runs recorded by an earlier attempt (key to run).
        on_creating: Called with (key, request) just before a create is sent.
        on_created: Called with (key, run) as soon as a run exists.
        on_outcome: Called with each outcome the moment it is known.
        on_change: Called with (key, run) on every status change.
        clock: Monotonic clock (default: the engine's, :mod:`prefect_agent_runs.timing`).
        sleep: Async sleep (default: the engine's).

    Returns:
        One outcome per request, in request order.

    Raises:
        ValueError: ``requests`` is a sequence with a missing or repeated key, or a bound
            is below 1.
    """
    if isinstance(requests, Sequence):
        keys = [r.key for r in requests]
        if any(k is None for k in keys) or len(set(keys)) != len(keys):
            raise ValueError("run_items: every request needs a key, unique within the batch")
    if max_concurrency < 1:
        raise ValueError("run_items: max_concurrency must be >= 1")
    if max_active_runs is DEFAULT:
        max_active_runs = default_max_active_runs(getattr(client, "capabilities", frozenset()))
    if max_active_runs is not None and max_active_runs < 1:
        raise ValueError("run_items: max_active_runs must be >= 1 or None")
    engine = _Engine(
        client,
        policy=policy,
        max_concurrency=max_concurrency,
        max_active_runs=max_active_runs,
        collect_results=collect_results,
        wait=wait,
        resume=resume and not fresh,
        known_runs=known_runs,
        on_creating=on_creating,
        on_created=on_created,
        on_outcome=on_outcome,
        on_change=on_change,
        clock=clock,
        sleep=sleep,
    )
    with batch_gc():  # the old heap frozen, the young generation wide (_heap.py)
        return await engine.run(_aiter(requests))


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
