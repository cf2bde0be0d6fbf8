"""The plumbing of the tasks: sync/async dispatch, interruption-safe sync runs, clients."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeAlias, TypeVar, cast

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.logging import get_run_logger
from prefect.tasks import Task
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_agent_runs.backends.base import RunEvent, RunsClient
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.errors import ValidationError
from prefect_agent_runs.models import Run
from prefect_agent_runs.waiting import PollPolicy

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
