"""Prefect tasks that list, delete, stream and read runs (see :mod:`.runs` for the rules)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from prefect_agent_runs.backends.base import RunEvent
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.models import Run, ThreadResult
from prefect_agent_runs.tasks._bodies import (
    _delete_run,
    _get_run_result,
    _list_runs,
    _stream_run_events,
)
from prefect_agent_runs.tasks._plumbing import _dispatch, _run_logger, _run_sync

__all__ = [
    "adelete_run",
    "aget_run_result",
    "alist_runs",
    "astream_run_events",
    "delete_run",
    "get_run_result",
    "list_runs",
    "stream_run_events",
]


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
