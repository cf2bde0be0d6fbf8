"""The wait steps: one *observation* of a run, as the wait engine repeats it.

:func:`prefect_agent_runs.waiting.wait_for_terminal` owns the deadline, the backoff,
riding out transient errors and cancelling on timeout; a backend only says how to look
at its run once, with one of these steps:

* :func:`poll_step`: read the run; follow the server's hint for the next look
  (:func:`hint_seconds` reads a header such as ``openai-poll-after-ms``).
* :func:`join_step`: a long poll that blocks server-side until the run ends (LangGraph
  ``join``), given the time left before the deadline, then a read of the run.
* :func:`event_stream_step`: follow the run's event stream until an event says the run
  ended (or the stream ends, or the deadline passes), then a read of the run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
import httpx

from prefect_agent_runs.backends.sse import RunEvent
from prefect_agent_runs.errors import TransportError
from prefect_agent_runs.models import Run
from prefect_agent_runs.waiting import Observation, Step

__all__ = ["event_stream_step", "hint_seconds", "join_step", "poll_step"]

logger = logging.getLogger("prefect_agent_runs.backends.steps")


def hint_seconds(
    response: httpx.Response, header: str, *, unit_seconds: float = 0.001
) -> float | None:
    """The delay a response's ``header`` asks for, in seconds (None when absent or bad).

    Args:
        response: The answer.
        header: The header (``openai-poll-after-ms``...).
        unit_seconds: What one unit of the header's value is worth (0.001: milliseconds).
    """
    value = response.headers.get(header)
    if not value:
        return None
    try:
        return max(0.0, float(value) * unit_seconds)
    except ValueError:
        return None


def poll_step(read: Callable[[], Awaitable[Observation]]) -> Step:
    """A step that reads the run once per observation.

    Args:
        read: Reads the run and returns it with the server's hint, if any.
    """

    async def step(remaining: float | None) -> Observation:
        return await read()

    return step


def join_step(
    join: Callable[[float], Awaitable[Any]],
    read: Callable[[], Awaitable[Run]],
    *,
    chunk_seconds: float,
    answered: Callable[[Any], Awaitable[Run | None]] | None = None,
    annotate: Callable[[Run, Any], Run] | None = None,
    backend: str = "",
) -> Step:
    """A step that blocks in a server-side join, then reads the run.

    Each join is given the time left before the deadline, at most ``chunk_seconds`` (a
    proxy may cut a longer idle request). A join cut short (a read timeout, a dropped
    connection) is not an error: the run is read and the engine joins again at once.

    Args:
        join: Joins the run for at most the given seconds; returns what the join answered.
        read: Reads the run.
        chunk_seconds: The longest single join.
        answered: Given what the join answered, the run's final state when the answer
            says it (then the run is not read), else None.
        annotate: Adds what the join answered to the run read after it (e.g. its error).
        backend: For the debug log.
    """

    async def step(remaining: float | None) -> Observation:
        chunk = chunk_seconds if remaining is None else max(0.001, min(remaining, chunk_seconds))
        answer: Any = None
        try:
            answer = await join(chunk)
        except TransportError as exc:
            if exc.reached_server is False:
                raise
            logger.debug("%s: a join ended early (%s)", backend, exc)
        if answered is not None:
            final = await answered(answer)
            if final is not None:
                return Observation(final, poll_after_seconds=None)
        observed = await read()
        if annotate is not None:
            observed = annotate(observed, answer)
        return Observation(
            observed, poll_after_seconds=0.0 if not observed.status.is_terminal else None
        )

    return step


def event_stream_step(
    events: Callable[[], AsyncGenerator[RunEvent, None]],
    read: Callable[[], Awaitable[Run]],
    *,
    is_final: Callable[[RunEvent], bool],
) -> Step:
    """A step that follows the run's events until one says the run ended, then reads it.

    The stream is given the time left before the deadline; when it ends, breaks (a
    transient error the engine rides out) or the time is up, the run is read, and the
    engine opens the stream again if the run goes on.

    Args:
        events: Opens the run's event stream (resuming where it left off is the
            stream's business: see :mod:`prefect_agent_runs.backends.sse`).
        read: Reads the run.
        is_final: True for an event after which the run is terminal.
    """

    async def step(remaining: float | None) -> Observation:
        with anyio.move_on_after(remaining):
            stream = events()
            try:
                async for event in stream:
                    if is_final(event):
                        break
            finally:
                await stream.aclose()
        observed = await read()
        return Observation(
            observed, poll_after_seconds=0.0 if not observed.status.is_terminal else None
        )

    return step
