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

import logging
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import Any

from prefect_agent_runs import timing
from prefect_agent_runs.errors import (
    AgentRunsError,
    ApiError,
    Conflict,
    NotFound,
    RateLimited,
    TransportError,
)
from prefect_agent_runs.models import Run
from prefect_agent_runs.transient import (
    TRANSIENT_TOLERANCE,
    Backoff,
    is_transient,
    may_have_started,
)

__all__ = ["CREATE_ID_KEY", "create_reconciled", "first_match", "new_create_id"]

CREATE_ID_KEY = "prefect_agent_runs_create_id"
"""Run metadata key holding the one-off id of the create that started the run."""

logger = logging.getLogger("prefect_agent_runs.create")

MAX_BACKOFF_SECONDS = 8.0
"""Cap of the wait before a lookup (it doubles after each lookup)."""
LOOKUP_WINDOW_SECONDS = 30.0
"""How long a create that may have reached the server is looked up before it is sent again
(issue 13, D5). It covers a create that the network delivers 20 s late; a create delivered
later than this after its timeout may start a second run (where the platform's own guards,
such as LangGraph's busy-thread 409 or Assistants' active-run 400, do not refuse it)."""


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


async def _look(
    lookup: Callable[[], Awaitable[Run | None]],
    *,
    window_seconds: float,
    backoff: Backoff,
    sleep: Callable[[float], Awaitable[None]],
    backend: str,
    action: str,
    exc: AgentRunsError,
) -> Run | None:
    """Look the run up, with backoff, until found or ``window_seconds`` of waits passed.

    A lookup that fails transiently is looked again (issue 13, D2); the window ends only
    on a lookup that answered "no such run". Returns the run, or None.

    Raises:
        AgentRunsError: A lookup failed for good (not transient), or the last lookups
            kept failing: the message says a run MAY exist.
    """
    waited = 0.0
    n = 0
    while True:
        delay = backoff.delay(n)
        n += 1
        await sleep(delay)
        waited += delay
        try:
            found = await lookup()
        except AgentRunsError as lookup_error:
            if is_transient(lookup_error) and (waited < window_seconds or n < TRANSIENT_TOLERANCE):
                logger.info(
                    "%s: %s: lookup %d failed (%s); looking again", backend, action, n, lookup_error
                )
                continue
            raise type(exc)(
                f"{exc.message} — and looking the run up failed too ({lookup_error}); "
                "a run MAY exist: check before starting it again (a rerun with the same "
                "batch_key looks again)",
                **_error_kwargs(exc),
            ) from lookup_error
        if found is not None:
            return found
        if waited >= window_seconds:
            return None


async def create_reconciled(
    send: Callable[[], Awaitable[Run]],
    lookup: Callable[[], Awaitable[Run | None]],
    *,
    backend: str,
    action: str,
    max_attempts: int = 3,
    backoff_seconds: float = 0.5,
    lookup_window_seconds: float | None = None,
    sleep: Callable[[float], Awaitable[None]] = timing.sleep,
) -> Run:
    """Send a create; after an ambiguous failure, adopt the run if it exists, else resend.

    After a failure that may have started a run (:func:`may_have_started`), the run is
    looked up with backoff over ``lookup_window_seconds`` (issue 13, D5: a create that the
    network delivers late is found, not sent twice); transient lookup failures are looked
    again (D2). A 409 after such a failure (the thread is busy: maybe with our first
    create, delivered late) is looked up too.

    Args:
        send: Sends the create once (the transport may retry what provably never
            reached the server: connect errors, 429).
        lookup: Finds the run this create made, or None.
        backend: Backend name, for messages.
        action: What is being created, for messages.
        max_attempts: Creates sent at most.
        backoff_seconds: The first wait before a lookup (doubles each time, up to
            :data:`MAX_BACKOFF_SECONDS`), so a slow server has committed the run before we look.
        lookup_window_seconds: How long to keep looking before sending again (None:
            :data:`LOOKUP_WINDOW_SECONDS`, read at call time).
        sleep: Sleep (tests inject one).

    Raises:
        AgentRunsError: The create failed for good, or stayed ambiguous after
            ``max_attempts`` (the message says a run may exist).
    """
    window = LOOKUP_WINDOW_SECONDS if lookup_window_seconds is None else lookup_window_seconds
    backoff = Backoff(backoff_seconds, MAX_BACKOFF_SECONDS, multiplier=2.0, jitter=0.0)
    ambiguous = False
    for attempt in range(1, max_attempts + 1):
        try:
            return await send()
        except (TransportError, ApiError) as exc:
            if not (may_have_started(exc) or (ambiguous and isinstance(exc, Conflict))):
                raise
            ambiguous = True
            logger.warning(
                "%s: %s: ambiguous failure on attempt %d (%s); looking the run up for up to "
                "%gs before resending",
                backend,
                action,
                attempt,
                exc,
                window,
            )
            found = await _look(
                lookup,
                window_seconds=window,
                backoff=backoff,
                sleep=sleep,
                backend=backend,
                action=action,
                exc=exc,
            )
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
                    f"looked up for {window:g}s afterwards and no run was found",
                    **_error_kwargs(exc),
                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover
