"""Prefect tasks, one remote operation each: create, read, wait for, cancel, list, delete.

Every task exists twice, with the same parameters:

* ``aNAME`` (``acreate_run``, ``await_for_run``...): the async Prefect task.
* ``NAME`` (``create_run``, ``wait_for_run``...): dispatches on the caller. In an async
  flow or task, or under a running event loop (a notebook), it returns the async task's
  coroutine, so ``await create_run(...)`` works; in a sync flow or plain sync code it runs
  the sync task and returns the value. ``create_run(..., _sync=True)`` forces the sync
  task. ``NAME.submit`` and ``NAME.map`` are the sync task's (for sync flows; async flows
  use ``aNAME.submit``); ``NAME.with_options(timeout_seconds=..., ...)`` gives a new
  dispatching pair.

Both twins run the same private coroutine; the sync one through Prefect's
``run_coro_as_sync``. Every task opens its client with
``async with credentials.get_client() as client`` and closes it before returning.

Rules (DESIGN.md, "Retry and idempotency rules"):

* No task has Prefect retries (``retries=0``): the transport under every client already
  retries what is safe to retry (connect errors, read timeouts, 408, 429, 5xx on reads
  and cancels, honoring ``Retry-After``), and a create is made duplicate-safe inside the
  client (sent once, looked up after an ambiguous failure). A Prefect retry on top would
  multiply the attempts, and on a create could start a second remote run.
* Every task uses ``cache_policy=NO_CACHE``: a status read must never be served from a
  cache, and a create must never be skipped because an earlier one had the same inputs.
* ``wait_for_run`` waits inside one task run (never a task run per poll), logs the run's
  status only when it changes, and cancels the remote run when the wait is cancelled
  (a Prefect cancellation, the task's own ``timeout_seconds``, SIGTERM) or when its
  deadline passes (``cancel_on_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeAlias, TypeVar, cast

from prefect import task
from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.tasks import Task
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_agent_runs.backends.base import RunEvent, RunsClient
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.errors import ValidationError
from prefect_agent_runs.models import Run, RunRequest, ThreadResult
from prefect_agent_runs.waiting import PollPolicy, raise_for_outcome

__all__ = [
    "acancel_run",
    "acreate_run",
    "adelete_run",
    "aget_run",
    "aget_run_result",
    "alist_runs",
    "astream_run_events",
    "await_for_run",
    "cancel_run",
    "create_run",
    "delete_run",
    "get_run",
    "get_run_result",
    "list_runs",
    "stream_run_events",
    "wait_for_run",
]

P = ParamSpec("P")
R = TypeVar("R")
Logger: TypeAlias = "logging.Logger | logging.LoggerAdapter[logging.Logger]"

_FALLBACK_LOGGER = logging.getLogger("prefect_agent_runs.tasks")
_CLEANUP_SECONDS = 30.0
"""How long a sync twin, interrupted, waits for its coroutine to cancel the remote run."""


# -- plumbing ---------------------------------------------------------------------------


def _run_logger() -> Logger:
    """The task run's logger, or a module logger when called outside a run (``.fn``)."""
    try:
        return get_run_logger()
    except Exception:
        return _FALLBACK_LOGGER


def _run_sync(coro: Coroutine[Any, Any, R]) -> R:
    """Run ``coro`` with ``run_coro_as_sync``; an interruption cancels it first.

    ``run_coro_as_sync`` runs the coroutine in Prefect's event-loop thread. When the
    calling thread is interrupted while it waits (Prefect's task timeout alarm,
    ``TerminationSignal`` on SIGTERM, ``KeyboardInterrupt``), the coroutine would go on
    in that other thread; here it is cancelled instead, and its cleanup (the remote
    cancel in the wait engine) is given up to ``_CLEANUP_SECONDS`` before the
    interruption propagates.
    """
    handle: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []
    done = threading.Event()

    async def guarded() -> R:
        current = asyncio.current_task()
        if current is not None:
            handle.append((asyncio.get_running_loop(), current))
        try:
            return await coro
        finally:
            done.set()

    try:
        return cast(R, run_coro_as_sync(guarded()))
    except BaseException:
        if handle and not done.is_set():
            loop, running = handle[0]
            loop.call_soon_threadsafe(running.cancel)
            done.wait(_CLEANUP_SECONDS)
        raise


def _dispatch(
    async_task: Task[P, Coroutine[Any, Any, R]],
) -> Callable[[Task[P, R]], Callable[P, R]]:
    """``async_dispatch(async_task)`` over a sync task, with ``submit``, ``map``, ``with_options``.

    The dispatching function goes above the sync task (as prefect-aws does): with the
    task above the dispatcher, the dispatcher would run inside a *sync* task run and
    always pick the sync body, so ``create_run(...)`` in an async flow would block the
    event loop instead of returning an awaitable (checked against prefect 3.8.8).

    ``submit`` and ``map`` are the sync task's (for sync flows); ``with_options(**kw)``
    returns a new dispatching pair with the options applied to both tasks.
    """

    def decorate(sync_task: Task[P, R]) -> Callable[P, R]:
        dispatching: Any = async_dispatch(async_task)(sync_task)  # type: ignore[arg-type]
        dispatching.submit = sync_task.submit
        dispatching.map = sync_task.map

        def with_options(**options: Any) -> Callable[P, R]:
            return _dispatch(async_task.with_options(**options))(sync_task.with_options(**options))

        dispatching.with_options = with_options
        return cast(Callable[P, R], dispatching)

    return decorate


class _Client(RunsClient, Protocol):
    """What the tasks use of a client: the protocol plus the base class's members."""

    policy: PollPolicy

    async def __aenter__(self) -> _Client: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def delete_run(self, run_id: str, *, thread_id: str | None = None) -> None: ...

    def stream_events(self, run: Run, **options: Any) -> AsyncIterator[RunEvent]: ...


def _open(credentials: AgentRunsCredentials) -> _Client:
    """The backend's client (``get_client()`` types it as the base class)."""
    return cast(_Client, credentials.get_client())


def _run_id(run: Run | str) -> str:
    return run.id if isinstance(run, Run) else run


def _thread_of(run: Run | str, thread_id: str | None) -> str | None:
    if thread_id is not None:
        return thread_id
    return run.thread_id if isinstance(run, Run) else None


async def _resolve(client: _Client, run: Run | str, thread_id: str | None) -> Run:
    if isinstance(run, Run) and (thread_id is None or thread_id == run.thread_id):
        return run
    return await client.get_run(_run_id(run), thread_id=_thread_of(run, thread_id))


def _wait_policy(
    client: _Client,
    timeout_seconds: float | None,
    cancel_on_timeout: bool,
    poll_interval_seconds: float | None,
    max_poll_interval_seconds: float | None,
) -> PollPolicy:
    base = client.policy
    poll = poll_interval_seconds if poll_interval_seconds is not None else None
    cap = max_poll_interval_seconds
    if cap is None and poll is not None:
        cap = max(poll, base.max_poll_interval_seconds)
    if poll is None and cap is not None:
        poll = min(cap, base.poll_interval_seconds)
    try:
        return base.with_overrides(
            timeout_seconds=timeout_seconds,
            cancel_on_timeout=cancel_on_timeout,
            poll_interval_seconds=poll,
            max_poll_interval_seconds=cap,
        )
    except ValueError as exc:
        raise ValidationError(f"{client.backend}: {exc}", backend=client.backend) from exc


# -- shared bodies (one per operation; both twins run it) ---------------------------------


async def _create_run(
    credentials: AgentRunsCredentials, request: RunRequest, logger: Logger
) -> Run:
    async with _open(credentials) as client:
        run = await client.create_run(request)
    logger.info(
        "Created %s run %s on thread %s for assistant %r (status %s)",
        run.backend,
        run.id,
        run.thread_id,
        request.assistant_id,
        run.raw_status or run.status.value,
    )
    return run


async def _get_run(credentials: AgentRunsCredentials, run: Run | str, thread_id: str | None) -> Run:
    async with _open(credentials) as client:
        return await client.get_run(_run_id(run), thread_id=_thread_of(run, thread_id))


async def _wait_for_run(
    credentials: AgentRunsCredentials,
    run: Run | str,
    thread_id: str | None,
    timeout_seconds: float | None,
    cancel_on_timeout: bool,
    poll_interval_seconds: float | None,
    max_poll_interval_seconds: float | None,
    raise_on_failure: bool,
    logger: Logger,
) -> Run:
    def on_change(changed: Run) -> None:
        logger.info("%s: %s is now %s", changed.backend, changed.describe(), changed.status.value)

    async with _open(credentials) as client:
        policy = _wait_policy(
            client,
            timeout_seconds,
            cancel_on_timeout,
            poll_interval_seconds,
            max_poll_interval_seconds,
        )
        current = await _resolve(client, run, thread_id)
        logger.info(
            "Waiting for %s run %s on thread %s (status %s, timeout_seconds=%s)",
            current.backend,
            current.id,
            current.thread_id,
            current.status.value,
            policy.timeout_seconds,
        )
        # the wait engine cancels the remote run if this task is cancelled or times out
        final = await client.wait_for_run(current, policy=policy, on_change=on_change)
    logger.info("%s: %s ended as %s", final.backend, final.describe(), final.status.value)
    return raise_for_outcome(final) if raise_on_failure else final


async def _cancel_run(
    credentials: AgentRunsCredentials,
    run: Run | str,
    thread_id: str | None,
    wait: bool,
    logger: Logger,
) -> Run:
    async with _open(credentials) as client:
        cancelled = await client.cancel_run(
            _run_id(run), thread_id=_thread_of(run, thread_id), wait=wait
        )
    logger.info("Cancel requested for %s: now %s", cancelled.describe(), cancelled.status.value)
    return cancelled


async def _list_runs(
    credentials: AgentRunsCredentials,
    thread_id: str | None,
    limit: int,
    filters: dict[str, Any] | None,
) -> list[Run]:
    if limit < 1:
        raise ValidationError(f"limit must be >= 1, not {limit}")
    async with _open(credentials) as client:
        page = await client.list_runs(thread_id=thread_id, limit=min(limit, 100), **(filters or {}))
        return await page.get_all(max_items=limit)


async def _delete_run(
    credentials: AgentRunsCredentials, run: Run | str, thread_id: str | None, logger: Logger
) -> None:
    async with _open(credentials) as client:
        await client.delete_run(_run_id(run), thread_id=_thread_of(run, thread_id))
    logger.info("Deleted run %s on thread %s", _run_id(run), _thread_of(run, thread_id))


async def _stream_run_events(
    credentials: AgentRunsCredentials,
    run: Run | str,
    thread_id: str | None,
    max_events: int,
    options: dict[str, Any] | None,
) -> list[RunEvent]:
    if max_events < 1:
        raise ValidationError(f"max_events must be >= 1, not {max_events}")
    events: list[RunEvent] = []
    async with _open(credentials) as client:
        current = await _resolve(client, run, thread_id)
        stream = client.stream_events(current, **(options or {}))
        try:
            async for event in stream:
                events.append(event)
                if len(events) >= max_events:
                    break
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
    return events


async def _get_run_result(
    credentials: AgentRunsCredentials, run: Run | str, thread_id: str | None
) -> ThreadResult:
    async with _open(credentials) as client:
        current = await _resolve(client, run, thread_id)
        return await client.get_result(current)


# -- create_run ---------------------------------------------------------------------------


@task(retries=0, cache_policy=NO_CACHE)
async def acreate_run(credentials: AgentRunsCredentials, request: RunRequest) -> Run:
    """Start one remote run and return it (async task; see :func:`create_run`).

    Args:
        credentials: The backend's credentials block.
        request: What to start.

    Returns:
        The created run.

    Examples:
        ```python
        from prefect import flow
        from prefect_agent_runs import LangGraphCredentials, RunRequest
        from prefect_agent_runs.tasks import acreate_run

        @flow
        async def start() -> str:
            credentials = await LangGraphCredentials.load("BLOCK_NAME")
            run = await acreate_run(credentials, RunRequest(assistant_id="agent", message="hi"))
            return run.id
        ```
    """
    return await _create_run(credentials, request, _run_logger())


@_dispatch(acreate_run)
@task(retries=0, cache_policy=NO_CACHE)
def create_run(credentials: AgentRunsCredentials, request: RunRequest) -> Run:
    """Start one remote run and return it; logs its thread and run ids.

    The create is sent once and made duplicate-safe inside the client (after an
    ambiguous failure the run is looked up before anything is resent); the task itself
    is never retried by Prefect (``retries=0``) and never cached (``NO_CACHE``).

    Args:
        credentials: The backend's credentials block.
        request: What to start (assistant, thread, input or message, metadata).

    Returns:
        The created run (``run.id``, ``run.thread_id``, ``run.status``).

    Raises:
        AgentRunsError: The server refused the request, or could not be reached.

    Examples:
        ```python
        from prefect import flow
        from prefect_agent_runs import LangGraphCredentials, RunRequest
        from prefect_agent_runs.tasks import create_run, wait_for_run

        @flow
        def start_and_wait() -> str:
            credentials = LangGraphCredentials.load("BLOCK_NAME")
            run = create_run(credentials, RunRequest(assistant_id="agent", message="hi"))
            return wait_for_run(credentials, run, timeout_seconds=600).status.value
        ```
    """
    return _run_sync(_create_run(credentials, request, _run_logger()))


# -- get_run ------------------------------------------------------------------------------


@task(retries=0, cache_policy=NO_CACHE)
async def aget_run(
    credentials: AgentRunsCredentials, run: Run | str, thread_id: str | None = None
) -> Run:
    """Read one run's current state (async task; see :func:`get_run`).

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).

    Returns:
        The run as the server sees it now.

    Examples:
        ```python
        run = await aget_run(credentials, "RUN_ID", thread_id="THREAD_ID")
        ```
    """
    return await _get_run(credentials, run, thread_id)


@_dispatch(aget_run)
@task(retries=0, cache_policy=NO_CACHE)
def get_run(credentials: AgentRunsCredentials, run: Run | str, thread_id: str | None = None) -> Run:
    """Read one run's current state.

    Never cached (``NO_CACHE``) and not retried by Prefect: the transport retries
    connect errors, timeouts, 429 and 5xx itself.

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run); LangGraph and
            Assistants runs need it.

    Returns:
        The run as the server sees it now.

    Raises:
        NotFound: No such run or thread.

    Examples:
        ```python
        from prefect import flow
        from prefect_agent_runs import LangGraphCredentials
        from prefect_agent_runs.tasks import get_run

        @flow
        def status(run_id: str, thread_id: str) -> str:
            credentials = LangGraphCredentials.load("BLOCK_NAME")
            return get_run(credentials, run_id, thread_id=thread_id).status.value
        ```
    """
    return _run_sync(_get_run(credentials, run, thread_id))


# -- wait_for_run -------------------------------------------------------------------------


@task(retries=0, cache_policy=NO_CACHE)
async def await_for_run(
    credentials: AgentRunsCredentials,
    run: Run | str,
    thread_id: str | None = None,
    timeout_seconds: float | None = None,
    cancel_on_timeout: bool = True,
    poll_interval_seconds: float | None = None,
    max_poll_interval_seconds: float | None = None,
    raise_on_failure: bool = True,
) -> Run:
    """Wait until a run is terminal (async task; see :func:`wait_for_run`).

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).
        timeout_seconds: How long to wait for a terminal state (None: no limit).
        cancel_on_timeout: Cancel the remote run when that deadline passes.
        poll_interval_seconds: The first interval between two polls.
        max_poll_interval_seconds: The polling backoff's cap.
        raise_on_failure: Raise when the run did not complete successfully.

    Returns:
        The run in its terminal state.

    Examples:
        ```python
        run = await await_for_run(credentials, run, timeout_seconds=600)
        ```
    """
    return await _wait_for_run(
        credentials,
        run,
        thread_id,
        timeout_seconds,
        cancel_on_timeout,
        poll_interval_seconds,
        max_poll_interval_seconds,
        raise_on_failure,
        _run_logger(),
    )


@_dispatch(await_for_run)
@task(retries=0, cache_policy=NO_CACHE)
def wait_for_run(
    credentials: AgentRunsCredentials,
    run: Run | str,
    thread_id: str | None = None,
    timeout_seconds: float | None = None,
    cancel_on_timeout: bool = True,
    poll_interval_seconds: float | None = None,
    max_poll_interval_seconds: float | None = None,
    raise_on_failure: bool = True,
) -> Run:
    """Wait until a run is terminal, in one task run, and return its last state.

    The wait uses the backend's push where it has one (LangGraph ``join``), else polls
    with jittered backoff from ``poll_interval_seconds`` up to
    ``max_poll_interval_seconds`` (server hints win). Status changes are logged, once
    each. The remote run is cancelled when the deadline passes (``cancel_on_timeout``)
    and when the wait itself is interrupted: the Prefect task is cancelled, its own
    ``timeout_seconds`` option fires, or the process gets SIGTERM. Not retried by Prefect
    and never cached.

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).
        timeout_seconds: How long to wait for a terminal state (None: no limit).
        cancel_on_timeout: Cancel the remote run when that deadline passes.
        poll_interval_seconds: The first interval between two polls (default: the
            client's, 1 s).
        max_poll_interval_seconds: The polling backoff's cap (default: the client's, 15 s).
        raise_on_failure: Raise when the run did not complete successfully; when False,
            the run is returned whatever its terminal status.

    Returns:
        The run in its terminal state.

    Raises:
        RunTimedOut: ``timeout_seconds`` passed first (``.cancelled`` says whether the
            remote run was cancelled). Raised whatever ``raise_on_failure`` says.
        RunFailed: The run failed (with ``raise_on_failure``).
        RunCancelled: The run was cancelled or interrupted (with ``raise_on_failure``).
        RunExpired: The run expired or timed out on the server (with ``raise_on_failure``).
        RunRequiresAction: The run waits for tool outputs (with ``raise_on_failure``).

    Examples:
        ```python
        from prefect import flow
        from prefect_agent_runs import LangGraphCredentials, RunRequest
        from prefect_agent_runs.tasks import create_run, get_run_result, wait_for_run

        @flow
        def ask(question: str) -> str | None:
            credentials = LangGraphCredentials.load("BLOCK_NAME")
            run = create_run(credentials, RunRequest(assistant_id="agent", message=question))
            run = wait_for_run(credentials, run, timeout_seconds=900, poll_interval_seconds=2)
            return get_run_result(credentials, run).text
        ```
    """
    return _run_sync(
        _wait_for_run(
            credentials,
            run,
            thread_id,
            timeout_seconds,
            cancel_on_timeout,
            poll_interval_seconds,
            max_poll_interval_seconds,
            raise_on_failure,
            _run_logger(),
        )
    )


# -- cancel_run ---------------------------------------------------------------------------


@task(retries=0, cache_policy=NO_CACHE)
async def acancel_run(
    credentials: AgentRunsCredentials,
    run: Run | str,
    thread_id: str | None = None,
    wait: bool = False,
) -> Run:
    """Cancel a run (async task; see :func:`cancel_run`).

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).
        wait: Return only once the run has stopped, where the backend can.

    Returns:
        The run as read after the cancel.

    Examples:
        ```python
        run = await acancel_run(credentials, run)
        ```
    """
    return await _cancel_run(credentials, run, thread_id, wait, _run_logger())


@_dispatch(acancel_run)
@task(retries=0, cache_policy=NO_CACHE)
def cancel_run(
    credentials: AgentRunsCredentials,
    run: Run | str,
    thread_id: str | None = None,
    wait: bool = False,
) -> Run:
    """Cancel a run; repeating it, or cancelling a finished run, is harmless.

    The transport retries the cancel on transient errors; Prefect does not retry the task.

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).
        wait: Return only once the run has stopped, where the backend can.

    Returns:
        The run as read after the cancel (its status may still be ``cancelling``).

    Examples:
        ```python
        from prefect import flow
        from prefect_agent_runs import LangGraphCredentials
        from prefect_agent_runs.tasks import cancel_run

        @flow
        def stop(run_id: str, thread_id: str) -> str:
            credentials = LangGraphCredentials.load("BLOCK_NAME")
            return cancel_run(credentials, run_id, thread_id=thread_id).status.value
        ```
    """
    return _run_sync(_cancel_run(credentials, run, thread_id, wait, _run_logger()))


# -- list_runs ----------------------------------------------------------------------------


@task(retries=0, cache_policy=NO_CACHE)
async def alist_runs(
    credentials: AgentRunsCredentials,
    thread_id: str | None = None,
    limit: int = 100,
    filters: dict[str, Any] | None = None,
) -> list[Run]:
    """List runs (async task; see :func:`list_runs`).

    Args:
        credentials: The backend's credentials block.
        thread_id: The thread whose runs to list.
        limit: The most runs returned (pages are followed up to it).
        filters: Backend-specific filters (LangGraph: ``status``; Assistants: ``order``).

    Returns:
        The runs, newest first where the backend orders them so.

    Examples:
        ```python
        runs = await alist_runs(credentials, thread_id="THREAD_ID", limit=10)
        ```
    """
    return await _list_runs(credentials, thread_id, limit, filters)


@_dispatch(alist_runs)
@task(retries=0, cache_policy=NO_CACHE)
def list_runs(
    credentials: AgentRunsCredentials,
    thread_id: str | None = None,
    limit: int = 100,
    filters: dict[str, Any] | None = None,
) -> list[Run]:
    """List runs, following the server's pages up to ``limit`` runs.

    Never cached and not retried by Prefect (the transport retries each page request).

    Args:
        credentials: The backend's credentials block.
        thread_id: The thread whose runs to list (LangGraph and Assistants list per
            thread).
        limit: The most runs returned (pages are followed up to it).
        filters: Backend-specific filters passed to the client's ``list_runs``
            (LangGraph: ``status``, ``select``; Assistants: ``order``).

    Returns:
        The runs, newest first where the backend orders them so.

    Examples:
        ```python
        from prefect import flow
        from prefect_agent_runs import LangGraphCredentials
        from prefect_agent_runs.tasks import list_runs

        @flow
        def running(thread_id: str) -> list[str]:
            credentials = LangGraphCredentials.load("BLOCK_NAME")
            runs = list_runs(credentials, thread_id=thread_id, filters={"status": "running"})
            return [run.id for run in runs]
        ```
    """
    return _run_sync(_list_runs(credentials, thread_id, limit, filters))


# -- delete_run ---------------------------------------------------------------------------


@task(retries=0, cache_policy=NO_CACHE)
async def adelete_run(
    credentials: AgentRunsCredentials, run: Run | str, thread_id: str | None = None
) -> None:
    """Delete a finished run (async task; see :func:`delete_run`).

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).

    Examples:
        ```python
        await adelete_run(credentials, run)
        ```
    """
    await _delete_run(credentials, run, thread_id, _run_logger())


@_dispatch(adelete_run)
@task(retries=0, cache_policy=NO_CACHE)
def delete_run(
    credentials: AgentRunsCredentials, run: Run | str, thread_id: str | None = None
) -> None:
    """Delete a finished run (capability ``delete_run``).

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).

    Raises:
        NotSupported: The backend cannot delete runs.
        ApiError: The server refused (for instance, the run is still active).

    Examples:
        ```python
        from prefect import flow
        from prefect_agent_runs import LangGraphCredentials
        from prefect_agent_runs.tasks import delete_run

        @flow
        def clean_up(run_id: str, thread_id: str) -> None:
            credentials = LangGraphCredentials.load("BLOCK_NAME")
            delete_run(credentials, run_id, thread_id=thread_id)
        ```
    """
    _run_sync(_delete_run(credentials, run, thread_id, _run_logger()))


# -- stream_run_events --------------------------------------------------------------------


@task(retries=0, cache_policy=NO_CACHE)
async def astream_run_events(
    credentials: AgentRunsCredentials,
    run: Run | str,
    thread_id: str | None = None,
    max_events: int = 1000,
    options: dict[str, Any] | None = None,
) -> list[RunEvent]:
    """Collect a run's stream events (async task; see :func:`stream_run_events`).

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).
        max_events: Stop after this many events.
        options: Backend-specific stream options (LangGraph: ``stream_mode``,
            ``last_event_id``).

    Returns:
        The events, in order.

    Examples:
        ```python
        events = await astream_run_events(credentials, run, max_events=100)
        ```
    """
    return await _stream_run_events(credentials, run, thread_id, max_events, options)


@_dispatch(astream_run_events)
@task(retries=0, cache_policy=NO_CACHE)
def stream_run_events(
    credentials: AgentRunsCredentials,
    run: Run | str,
    thread_id: str | None = None,
    max_events: int = 1000,
    options: dict[str, Any] | None = None,
) -> list[RunEvent]:
    """Collect a run's stream events until it ends, or ``max_events`` (a task cannot yield).

    A dropped stream is resumed by the client where the backend allows it (LangGraph:
    ``Last-Event-ID``), so no event is lost or repeated. For unbounded streams, iterate
    ``client.stream_events(run)`` yourself inside a task.

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).
        max_events: Stop after this many events (the stream is closed then).
        options: Backend-specific stream options (LangGraph: ``stream_mode``,
            ``last_event_id``, ``cancel_on_disconnect``).

    Returns:
        The events (dicts with ``event``, ``data`` and ``id``), in order.

    Raises:
        NotSupported: The backend has no event stream.

    Examples:
        ```python
        from prefect import flow
        from prefect_agent_runs import LangGraphCredentials
        from prefect_agent_runs.tasks import stream_run_events

        @flow
        def events(run_id: str, thread_id: str) -> list[str]:
            credentials = LangGraphCredentials.load("BLOCK_NAME")
            events = stream_run_events(credentials, run_id, thread_id=thread_id, max_events=50)
            return [event["event"] for event in events]
        ```
    """
    return _run_sync(_stream_run_events(credentials, run, thread_id, max_events, options))


# -- get_run_result -----------------------------------------------------------------------


@task(retries=0, cache_policy=NO_CACHE)
async def aget_run_result(
    credentials: AgentRunsCredentials, run: Run | str, thread_id: str | None = None
) -> ThreadResult:
    """Read what a run wrote to its thread (async task; see :func:`get_run_result`).

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).

    Returns:
        The run's messages, the thread's values and the last assistant text.

    Examples:
        ```python
        result = await aget_run_result(credentials, run)
        print(result.text)
        ```
    """
    return await _get_run_result(credentials, run, thread_id)


@_dispatch(aget_run_result)
@task(retries=0, cache_policy=NO_CACHE)
def get_run_result(
    credentials: AgentRunsCredentials, run: Run | str, thread_id: str | None = None
) -> ThreadResult:
    """Read what a run wrote to its thread: messages, state values, last assistant text.

    Args:
        credentials: The backend's credentials block.
        run: The run, or its id.
        thread_id: The run's thread (taken from ``run`` when it is a Run).

    Returns:
        A :class:`~prefect_agent_runs.models.ThreadResult` (``.text`` is the last
        assistant message's text).

    Examples:
        ```python
        from prefect import flow
        from prefect_agent_runs import LangGraphCredentials
        from prefect_agent_runs.tasks import get_run_result

        @flow
        def answer(run_id: str, thread_id: str) -> str | None:
            credentials = LangGraphCredentials.load("BLOCK_NAME")
            return get_run_result(credentials, run_id, thread_id=thread_id).text
        ```
    """
    return _run_sync(_get_run_result(credentials, run, thread_id))
