"""The shared bodies of the tasks: one coroutine per operation, run by both twins."""

from __future__ import annotations

from typing import Any

from prefect_agent_runs._signals import stoppable
from prefect_agent_runs.backends.base import RunEvent
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.errors import ValidationError
from prefect_agent_runs.models import Run, RunRequest, ThreadResult
from prefect_agent_runs.tasks._plumbing import (
    Logger,
    _open,
    _resolve,
    _run_id,
    _thread_of,
    _wait_policy,
)
from prefect_agent_runs.waiting import raise_for_outcome

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


@stoppable  # SIGTERM inside a loop callback still cancels the remote run
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
