"""What the workflow-runs and project-threads emulators share: recording, faults, dropped
streams and the Starlette routing around their handlers.

Each emulator is a :class:`ServedApp` whose ``app`` is a Starlette application of plain
routes; every route's handler goes through :meth:`EmulatorBase._handle`, which records the
exchange (:class:`~prefect_agent_runs.testing.assistants.RecordedRequest`), injects the
faults asked for with :meth:`EmulatorBase.inject_faults`, and turns an :class:`HttpError`
into the platform's error body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from prefect_agent_runs.testing._faults import FaultInjection, Faults
from prefect_agent_runs.testing._serve import ServedApp
from prefect_agent_runs.testing.assistants import RecordedRequest

__all__ = ["EmulatorBase", "Handler", "HttpError", "iso", "new_id", "parse_script"]

logger = logging.getLogger(__name__)

_REDACTED_HEADERS = frozenset({"authorization", "x-client-secret", "api-key", "x-api-key"})


def iso(seconds: float) -> str:
    """An ISO-8601 UTC timestamp with milliseconds, as the platforms write them.

    Args:
        seconds: A POSIX timestamp.

    Returns:
        e.g. ``"2026-12-01T21:00:00.000Z"``.
    """
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class HttpError(Exception):
    """An error answer: a status and the JSON body the platform sends with it.

    Args:
        status: The HTTP status.
        body: The JSON body.
        headers: Extra response headers.
    """

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}: {json.dumps(body)[:200]}")
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass
class _Drops:
    after_events: int
    remaining: int | None


Handler = Callable[[Request, Any, RecordedRequest], Awaitable[Response]]
"""An emulator route's handler: the request, its decoded JSON body, and its record."""


class EmulatorBase(FaultInjection, ServedApp):
    """Base of the emulators: recorded traffic, faults on request, dropped SSE streams.

    Subclasses list their routes in :meth:`routes` and say how a fault reads on their
    platform in :meth:`fault_body`.

    Args:
        run_seconds: How long a run runs before its outcome.
        queue_seconds: How long a run stays queued first.
        outcome: The outcome of every run not scripted otherwise.
        outcomes: The outcomes the platform's emulator knows (empty: any).
        clock: Monotonic clock driving run lifecycles (e.g. a ``FakeClock``; default
            ``time.monotonic``).
        wall_clock: Wall clock for timestamps (default ``time.time``).
        host: Address to serve on.
        port: Port to serve on (default: a free one).

    Raises:
        ValueError: ``outcome`` is not one of ``outcomes``.
    """

    def __init__(
        self,
        *,
        run_seconds: float = 0.2,
        queue_seconds: float = 0.0,
        outcome: str = "completed",
        outcomes: Collection[str] = (),
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        if outcomes and outcome not in outcomes:
            raise ValueError(f"outcome must be one of {outcomes}, not {outcome!r}")
        super().__init__(host=host, port=port)
        self.run_seconds = run_seconds
        self.queue_seconds = queue_seconds
        self.outcome = outcome
        self.clock = clock or time.monotonic
        self.wall_clock = wall_clock or time.time
        self.requests: list[RecordedRequest] = []
        """Every request received, in order."""
        self._lock = threading.RLock()
        self._faults: Faults | None = None
        self._drops: _Drops | None = None
        self.app = Starlette(routes=self._starlette_routes())

    # -- for subclasses ----------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler]]:
        """``(method, path, handler)`` triples; paths in Starlette syntax (``{run_id}``)."""
        raise NotImplementedError

    def fault_body(self, status: int, method: str, path: str) -> Any:
        """The JSON body of an injected fault with ``status`` on ``method path``."""
        raise NotImplementedError

    def not_found_body(self, path: str) -> Any:
        """The JSON body answered for a path the platform does not have."""
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API root, ``http://127.0.0.1:<port>`` (Linkage's ``serverURL``; project
        threads' paths start with ``/api`` below it)."""
        return self.url

    def reset(self) -> None:
        """Forget every recorded request, fault and stream drop (subclasses: and their
        runs and threads)."""
        with self._lock:
            self.requests.clear()
            self.clear_faults()

    def clear_faults(self) -> None:
        """Stop injecting faults and dropping streams."""
        with self._lock:
            self._faults = None
            self._drops = None

    def drop_streams(self, after_events: int, times: int | None = None) -> None:
        """Cut SSE connections short: each stream closes after ``after_events`` events.

        Args:
            after_events: Events sent on a connection before it is dropped.
            times: How many connections to drop (``None``: every one).
        """
        with self._lock:
            self._drops = _Drops(after_events, times)

    def take_stream_drop(self) -> int | None:
        """For a stream being opened: the events it may send before it is dropped, if any."""
        with self._lock:
            drops = self._drops
            if drops is None or drops.remaining == 0:
                return None
            if drops.remaining is not None:
                drops.remaining -= 1
            return drops.after_events

    # -- plumbing ----------------------------------------------------------------------

    def _starlette_routes(self) -> list[Route]:
        out = []
        for method, path, handler in self.routes():
            out.append(Route(path, self._wrap(handler), methods=[method]))
        out.append(
            Route(
                "/{path:path}",
                self._wrap(self._unknown),
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            )
        )
        return out

    async def _unknown(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        raise HttpError(404, self.not_found_body(request.url.path))

    def _wrap(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._handle(request, handler)

        return endpoint

    def json(
        self,
        record: RecordedRequest,
        body: Any,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """A JSON answer, recorded.

        Args:
            record: The exchange's record.
            body: The JSON body.
            status: The HTTP status.
            headers: Extra headers.
        """
        record.response_json = body
        return JSONResponse(body, status_code=status, headers=headers)

    def sse(
        self, record: RecordedRequest, events: AsyncIterator[tuple[str | None, str, Any]]
    ) -> StreamingResponse:
        """An SSE answer of ``(id, event, data)`` triples, recorded as they are sent.

        Args:
            record: The exchange's record.
            events: The events to send.
        """

        async def body() -> AsyncIterator[str]:
            async for event_id, name, data in events:
                record.stream_events.append((name, data))
                head = f"id: {event_id}\n" if event_id is not None else ""
                yield f"{head}event: {name}\ndata: {json.dumps(data)}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    async def _handle(self, request: Request, handler: Handler) -> Response:
        raw = await request.body()
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={
                k.lower(): ("<redacted>" if k.lower() in _REDACTED_HEADERS else v)
                for k, v in request.headers.items()
            },
            json=body,
        )
        self.requests.append(record)
        faults = self._pick_fault(request.method, request.url.path)
        response: Response | None = None
        if faults is not None and not faults.after_commit:
            if faults.delay_seconds:
                await asyncio.sleep(faults.delay_seconds)
            response = self._fault_response(faults, record)
        if response is None:
            try:
                if bad_json:
                    raise HttpError(400, self.bad_json_body(request.url.path))
                response = await handler(request, body, record)
            except HttpError as exc:
                response = self.json(record, exc.body, exc.status, exc.headers)
            except Exception:  # a bug in the emulator: answer 500 and log it, loudly
                logger.exception("%s failed on %s %s", type(self).__name__, request.method,
                                 request.url.path)  # fmt: skip
                response = self.json(
                    record, self.fault_body(500, request.method, request.url.path), 500
                )
            if faults is not None and faults.after_commit:
                if faults.delay_seconds:
                    await asyncio.sleep(faults.delay_seconds)
                response = self._fault_response(faults, record) or response
        record.status = response.status_code
        return response

    def bad_json_body(self, path: str) -> Any:
        """The JSON body answered (with 400) to a request whose body is not JSON."""
        return self.fault_body(400, "POST", path)

    def _fault_json(
        self, record: RecordedRequest, status: int, headers: dict[str, str]
    ) -> Response:
        return self.json(
            record, self.fault_body(status, record.method, record.path), status, headers
        )


def new_id(prefix: str) -> str:
    """A random id such as ``run_3f2a...`` (24 hex digits).

    Args:
        prefix: The id's prefix, without the underscore.
    """
    return f"{prefix}_{secrets.token_hex(12)}"


def parse_script(text: Any, keys: frozenset[str]) -> dict[str, Any]:
    """Read a per-run script: a JSON object (or a JSON string of one) with known keys.

    Args:
        text: The script, as found in the request.
        keys: The keys allowed.

    Returns:
        The script as a dict (empty when ``text`` is None).

    Raises:
        ValueError: If the script is not a JSON object or has unknown keys.
    """
    if text is None:
        return {}
    spec = json.loads(text) if isinstance(text, str) else text
    if not isinstance(spec, dict):
        raise ValueError("the emulator script must be a JSON object")
    unknown = set(spec) - keys
    if unknown:
        raise ValueError(f"unknown emulator script keys: {sorted(unknown)}")
    return spec
