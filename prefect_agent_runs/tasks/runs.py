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

from prefect import task
from prefect.cache_policies import NO_CACHE

from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.models import Run, RunRequest
from prefect_agent_runs.tasks._bodies import (
    _cancel_run,
    _create_run,
    _get_run,
    _wait_for_run,
)
from prefect_agent_runs.tasks._plumbing import _dispatch, _run_logger, _run_sync
from prefect_agent_runs.tasks.manage import (
    adelete_run,
    aget_run_result,
    alist_runs,
    astream_run_events,
    delete_run,
    get_run_result,
    list_runs,
    stream_run_events,
)

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
