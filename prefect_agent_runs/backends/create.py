"""The create skeleton: payload -> send once -> reconcile by lookup after an ambiguous failure.

No platform here honors an idempotency key, so a create that timed out or got a 5xx may
or may not have started a run. :func:`create_reconciled` never resends blindly: it first
asks the server (``lookup``) for the run this create would have made (found by a marker
the backend put in the run's metadata, :data:`CREATE_ID_KEY`), adopts it if it exists,
and only then sends again. "Ambiguous" is
:func:`prefect_agent_runs.transient.may_have_started`; the waits before each lookup are the
shared :class:`~prefect_agent_runs.transient.Backoff` (doubling, no jitter).

A backend uses it through
:meth:`~prefect_agent_runs.backends.base.BaseRunsClient.create_reconciled_run` (the
payload, the path, and how to find the run again) and :func:`first_match` (the lookup
over one of its lists).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any

from prefect_agent_runs.errors import (
    AgentRunsError,
    ApiError,
    NotFound,
    RateLimited,
    TransportError,
)
from prefect_agent_runs.models import Run
from prefect_agent_runs.transient import Backoff, may_have_started

__all__ = ["CREATE_ID_KEY", "create_reconciled", "first_match", "new_create_id"]

CREATE_ID_KEY = "prefect_agent_runs_create_id"
"""Run metadata key holding the one-off id of the create that started the run."""

logger = logging.getLogger("prefect_agent_runs.create")

MAX_BACKOFF_SECONDS = 8.0
"""Cap of the wait before a lookup (it doubles after each ambiguous failure)."""


def new_create_id() -> str:
    """A one-off id for one create (put in the run's metadata under :data:`CREATE_ID_KEY`)."""
    return uuid.uuid4().hex


async def first_match(
    runs: AsyncIterable[Run], match: Mapping[str, str], *, limit: int | None = None
) -> Run | None:
    """The first run whose metadata holds every ``match`` pair; None if none (or no list).

    Args:
        runs: The runs to look through, newest first (a ``PageRequest`` or a ``Page``).
        match: Metadata that the run must carry (values compared as strings).
        limit: Runs looked at, at most (None: every run).

    Returns:
        The run, or None (also when the list itself is NotFound: no thread, no run).
    """
    seen = 0
    try:
        async for run in runs:
            if all(str(run.metadata.get(k)) == v for k, v in match.items()):
                return run
            seen += 1
            if limit is not None and seen >= limit:
                break
    except NotFound:
        return None
    return None


def _error_kwargs(exc: AgentRunsError) -> dict[str, Any]:
    """The constructor arguments of ``exc`` besides its message (to re-raise it reworded)."""
    if isinstance(exc, TransportError):
        return {"backend": exc.backend, "reached_server": exc.reached_server}
    assert isinstance(exc, ApiError)
    kwargs: dict[str, Any] = {
        "status_code": exc.status_code,
        "code": exc.code,
        "request_id": exc.request_id,
        "backend": exc.backend,
        "body_snippet": exc.body_snippet,
    }
    if isinstance(exc, RateLimited):
        kwargs["retry_after"] = exc.retry_after
    return kwargs


async def create_reconciled(
    send: Callable[[], Awaitable[Run]],
    lookup: Callable[[], Awaitable[Run | None]],
    *,
    backend: str,
    action: str,
    max_attempts: int = 3,
    backoff_seconds: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Run:
    """Send a create; after an ambiguous failure, adopt the run if it exists, else resend.

    Args:
        send: Sends the create once (the transport may retry what provably never
            reached the server: connect errors, 429).
        lookup: Finds the run this create made, or None.
        backend: Backend name, for messages.
        action: What is being created, for messages.
        max_attempts: Creates sent at most.
        backoff_seconds: Wait before a lookup (doubles each time, up to
            :data:`MAX_BACKOFF_SECONDS`), so a slow server has committed the run before we look.
        sleep: Sleep (tests inject one).

    Raises:
        AgentRunsError: The create failed for good, or stayed ambiguous after
            ``max_attempts`` (the message says a run may exist).
    """
    backoff = Backoff(backoff_seconds, MAX_BACKOFF_SECONDS, multiplier=2.0, jitter=0.0)
    for attempt in range(1, max_attempts + 1):
        try:
            return await send()
        except (TransportError, ApiError) as exc:
            if not may_have_started(exc):
                raise
            logger.warning(
                "%s: %s: ambiguous failure on attempt %d (%s); looking the run up before resending",
                backend,
                action,
                attempt,
                exc,
            )
            await sleep(backoff.delay(attempt - 1))
            try:
                found = await lookup()
            except AgentRunsError as lookup_error:
                raise type(exc)(
                    f"{exc.message} — and looking the run up failed too ({lookup_error}); "
                    "a run MAY exist: check before starting it again",
                    **_error_kwargs(exc),
                ) from lookup_error
            if found is not None:
                logger.info(
                    "%s: %s: adopted %s created by the failed attempt",
                    backend,
                    action,
                    found.describe(),
                )
                return found
            if attempt == max_attempts:
                raise type(exc)(
                    f"{exc.message} — gave up after {max_attempts} create attempts; each was "
                    "looked up afterwards and no run was found",
                    **_error_kwargs(exc),
                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover
