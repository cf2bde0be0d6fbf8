"""Duplicate-safe create: send once, look the run up after an ambiguous failure.

No platform here honors an idempotency key, so a create that timed out or got a 5xx may
or may not have started a run. :func:`create_reconciled` never resends blindly: it first
asks the server (``lookup``) for the run this create would have made (found by a marker
the backend put in the run's metadata), adopts it if it exists, and only then sends again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prefect_agent_runs.errors import (
    AgentRunsError,
    ApiError,
    RateLimited,
    ServerError,
    TransportError,
)
from prefect_agent_runs.models import Run

__all__ = ["create_reconciled"]

logger = logging.getLogger("prefect_agent_runs.create")

MAX_BACKOFF_SECONDS = 8.0
"""Cap of the wait before a lookup (it doubles after each ambiguous failure)."""


def _ambiguous(exc: AgentRunsError) -> bool:
    """True when the create may have reached the server and started a run."""
    if isinstance(exc, TransportError):
        return exc.reached_server is not False
    return isinstance(exc, ServerError)


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
    delay = backoff_seconds
    for attempt in range(1, max_attempts + 1):
        try:
            return await send()
        except (TransportError, ServerError, RateLimited) as exc:
            if not _ambiguous(exc):
                raise
            logger.warning(
                "%s: %s: ambiguous failure on attempt %d (%s); looking the run up before resending",
                backend,
                action,
                attempt,
                exc,
            )
            await sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
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
