"""The resumable SSE reader every backend's event stream goes through.

:func:`read_events` opens a stream through the transport, decodes each event's data
(JSON when it is JSON), and, after a dropped connection, reconnects where the stream
left off, so that no event is lost or repeated. *Where it left off* is a
:class:`ResumePoint`: the default one sends ``Last-Event-ID`` (the SSE standard) and
skips events already yielded; a backend whose server resumes differently (LangGraph's
repeating ``<ms>-<seq>`` ids, a ``cursor`` query parameter) gives its own.

Only a GET stream is resumed: a POST that opens a stream also created something, and is
never sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder

from prefect_agent_runs.errors import TransportError
from prefect_agent_runs.http import Transport, loads_json

__all__ = ["ResumePoint", "RunEvent", "decode_data", "iter_sse", "read_events"]

logger = logging.getLogger("prefect_agent_runs.backends.sse")


class RunEvent(dict[str, Any]):
    """One event of a run's stream: ``event``, ``data`` and ``id`` (when the server sent one)."""

    @property
    def event(self) -> str:
        """The event name."""
        return str(self.get("event", ""))

    @property
    def id(self) -> str | None:
        """The event id, used to resume a stream (``Last-Event-ID``)."""
        value = self.get("id")
        return str(value) if value not in (None, "") else None

    @property
    def data(self) -> Any:
        """The decoded data."""
        return self.get("data")


def decode_data(data: str) -> Any:
    """An event's data: decoded JSON, or the text itself when it is not JSON (None if empty).

    Args:
        data: The ``data:`` lines of one event, joined.
    """
    if not data:
        return None
    try:
        return loads_json(data)  # keys shared between events: kept runs are smaller
    except ValueError:
        return data


async def iter_sse(
    response: httpx.Response, *, backend: str, action: str
) -> AsyncIterator[ServerSentEvent]:
    """The events of an SSE answer; a stream that ends inside an event raises.

    An event ends with a blank line. A stream whose last lines are not followed by one
    (a server that never sends the blank-line terminators, a body cut short) would end
    with its last event silently dropped (or, without any terminator, with no event at
    all): that is an error here, not an end (issue 13).

    Raises:
        TransportError: The stream ended in the middle of an event.
    """
    decoder = SSEDecoder()
    pending: list[str] = []
    async for line in response.aiter_lines():
        line = line.rstrip("\n").rstrip("\r")
        sse = decoder.decode(line)
        if line:
            pending.append(line)
        else:
            pending.clear()
        if sse is not None:
            yield sse
    if pending:
        raise TransportError(
            f"{backend}: {action}: the event stream ended in the middle of an event (no blank "
            f"line after its last {len(pending)} line(s)): a malformed or cut stream",
            backend=backend,
        )


class ResumePoint:
    """Where a stream is, so that a reconnect neither loses nor repeats an event.

    The default follows the SSE standard: the reconnect sends ``Last-Event-ID`` with
    the last id received, and events whose id was already yielded are skipped.

    Args:
        last_event_id: Resume after this event (None: from the start).

    Attributes:
        last: The id of the last event yielded (or given).
        yielded: Events yielded so far.
    """

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last = last_event_id
        self.yielded = 0
        self._seen: set[str] = set()

    def headers(self) -> dict[str, str]:
        """Headers of the (re)connecting request."""
        return {"Last-Event-ID": self.last} if self.last else {}

    def params(self) -> dict[str, Any]:
        """Query parameters of the (re)connecting request, added to the caller's."""
        return {}

    def is_new(self, event_id: str | None, event: str, data: str) -> bool:
        """Record an event; False when it was already yielded (a replay).

        Args:
            event_id: The event's id (None when it has none).
            event: The event's name.
            data: The event's raw data.
        """
        if event_id:
            if event_id in self._seen:
                return False
            self._seen.add(event_id)
            self.last = event_id
        self.yielded += 1
        return True


async def read_events(
    transport: Transport,
    method: str,
    path: str,
    *,
    action: str,
    json_body: Any = None,
    params: Mapping[str, Any] | None = None,
    resume: ResumePoint | None = None,
    max_reconnects: int = 0,
    check: Callable[[RunEvent], None] | None = None,
    is_end: Callable[[RunEvent, str], bool] | None = None,
    timeout: float | None = None,
    no_ids_hint: str = "",
) -> AsyncIterator[RunEvent]:
    """Yield a stream's events; on a dropped GET stream, resume without loss or repeat.

    Args:
        transport: The backend's transport.
        method: ``GET`` (resumable) or ``POST`` (sent once).
        path: The stream's path (ids already encoded).
        action: What the stream is, for messages.
        json_body: The request's JSON body (POST).
        params: Query parameters.
        resume: Where the stream starts and how it resumes (default: ``Last-Event-ID``).
        max_reconnects: Reconnections tried in a row after a drop before the error is
            raised (0: never reconnect).
        check: Called with every event before it is yielded; raises for an event that
            is an error (``event: error``).
        is_end: Called with every event and its raw data; True ends the stream there
            (the event is not yielded), e.g. an Assistants ``done``.
        timeout: Read timeout between two events (None: none).
        no_ids_hint: Added to the error when a stream whose events carry no ids drops
            (how to get ids, on this backend).

    Raises:
        TransportError: The stream broke and could not be resumed.
        ApiError: The server refused the stream (or ``check`` raised).
    """
    point = resume if resume is not None else ResumePoint()
    reconnects = 0
    while True:
        try:
            async with transport.stream(
                method,
                path,
                action=action,
                json=json_body,
                params={**dict(params or {}), **point.params()},
                headers=point.headers(),
                timeout=timeout,
            ) as response:
                async for sse in iter_sse(response, backend=transport.backend, action=action):
                    if not point.is_new(sse.id or None, sse.event, sse.data):
                        continue
                    reconnects = 0
                    event = RunEvent(event=sse.event, data=decode_data(sse.data), id=sse.id or None)
                    if is_end is not None and is_end(event, sse.data):
                        return
                    if check is not None:
                        check(event)
                    yield event
            return
        except (TransportError, httpx.HTTPError) as exc:
            cause = (
                exc
                if isinstance(exc, TransportError)
                else TransportError(
                    f"{transport.backend}: {action}: the stream broke: {type(exc).__name__}: {exc}",
                    backend=transport.backend,
                )
            )
            if method != "GET" or reconnects >= max_reconnects:
                raise cause from exc
            if point.yielded and point.last is None:
                raise TransportError(
                    f"{cause.message}. The events carry no ids, so the stream cannot be "
                    "resumed without loss" + (f": {no_ids_hint}" if no_ids_hint else ""),
                    backend=transport.backend,
                ) from exc
            reconnects += 1
            logger.info(
                "%s: %s: stream dropped (%s); resuming after event %s",
                transport.backend,
                action,
                type(exc).__name__,
                point.last,
            )
