"""An in-memory emulator of the OpenAI Assistants API v2 (threads, messages, runs).

It answers as the real API does (same shapes, error bodies, status codes, pagination and
SSE events), so the official ``openai`` package works against it unchanged. Runs advance
lazily on every request, driven by an injectable clock; no background tasks.

Example:
    ```python
    import openai
    from prefect_agent_runs.testing import AssistantsEmulator

    with AssistantsEmulator(run_seconds=0.05) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="test")
        run = client.beta.threads.create_and_run_poll(
            assistant_id="asst_demo",
            thread={"messages": [{"role": "user", "content": "hi"}]},
        )
        assert run.status == "completed"
    ```

A run is scripted through its metadata key ``emulator``, a JSON string such as
``{"seconds": 2, "outcome": "failed", "queue_seconds": 0.5, "tool": "get_weather"}``, or for
every run through the constructor. Outcomes: ``completed``, ``failed``, ``expired``,
``incomplete``, ``requires_action``, ``never``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from prefect_agent_runs.testing._faults import FaultInjection, Faults
from prefect_agent_runs.testing.assistants.handlers import EmulatorHandlers
from prefect_agent_runs.testing.assistants.lifecycle import quiet_stream_drops
from prefect_agent_runs.testing.assistants.records import (
    _FAULT_MESSAGES,
    _PREFIXES,
    _REDACTED_HEADERS,
    OUTCOMES,
    TERMINAL_STATUSES,
    FakeClock,
    RecordedRequest,
    _Call,
    _Run,
    _StreamDrops,
    _strip_prefix,
    _Thread,
)
from prefect_agent_runs.testing.assistants.validate import ApiError, error_body

__all__ = [
    "OUTCOMES",
    "TERMINAL_STATUSES",
    "AssistantsEmulator",
    "FakeClock",
    "RecordedRequest",
]

logger = logging.getLogger(__name__)

_Handler = Callable[[_Call], Awaitable[Response]]
_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH"]


class AssistantsEmulator(FaultInjection, EmulatorHandlers):
    """Emulates the OpenAI Assistants API v2 under ``/v1`` (and Azure's ``/openai``).

    Args:
        run_seconds: How long a run stays ``in_progress`` before its outcome.
        queue_seconds: How long a run stays ``queued`` first.
        outcome: The outcome of every run not scripted through its metadata.
        cancel_seconds: How long a cancelled run stays ``cancelling``.
        expires_seconds: ``expires_at - created_at``; a run waiting in ``requires_action``
            longer than this expires.
        poll_after_ms: Value of the ``openai-poll-after-ms`` header on run answers
            (``None`` omits it).
        api_key: If set, requests must carry ``Authorization: Bearer <key>`` or
            ``api-key: <key>``; otherwise any (or no) credentials are accepted.
        retired: Answer 404 on every assistants/threads path, as api.openai.com does since
            the Assistants API was shut down on 2026-08-26.
        compress_streams: A streamed run (``stream: true``) waits at most
            ``run_seconds`` of real time for each of its transitions, then jumps to it
            (tests of long runs stream fast). False: streams take the scripted time, as
            polls see it (benchmarks).
        clock: Monotonic clock driving run lifecycles (e.g. a :class:`FakeClock`).
        wall_clock: Wall clock for ``created_at`` and other timestamps.
        model: Model reported on runs that name none.
        host: Address to serve on.
        port: Port to serve on (default: a free one).
    """

    _retry_after_ms = True

    def __init__(
        self,
        *,
        run_seconds: float = 0.2,
        queue_seconds: float = 0.0,
        outcome: str = "completed",
        cancel_seconds: float = 0.0,
        expires_seconds: float = 600.0,
        poll_after_ms: int | None = 100,
        api_key: str | None = None,
        retired: bool = False,
        compress_streams: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        model: str = "gpt-4o",
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        self.run_seconds = run_seconds
        self.queue_seconds = queue_seconds
        self.outcome = outcome
        self.cancel_seconds = cancel_seconds
        self.expires_seconds = expires_seconds
        self.poll_after_ms = poll_after_ms
        self.api_key = api_key
        self.retired = retired
        self.compress_streams = compress_streams
        self.clock = clock
        self.wall_clock = wall_clock
        self.model = model
        self.requests: list[RecordedRequest] = []
        """Every request received, in order (see :class:`RecordedRequest`)."""
        self._lock = threading.RLock()
        self._faults: Faults | None = None
        self._stream_drops: _StreamDrops | None = None
        self._threads: dict[str, _Thread] = {}
        self._runs: dict[str, _Run] = {}
        self._assistants: dict[str, dict[str, Any]] = {}
        self.app = Starlette(routes=self._routes())

    # -- public helpers ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:<port>/v1``."""
        return f"{self.url}/v1"

    @property
    def azure_endpoint(self) -> str:
        """The endpoint for ``openai.AzureOpenAI(azure_endpoint=...)`` (paths under /openai)."""
        return self.url

    def reset(self) -> None:
        """Forget all threads, runs, assistants, recorded requests and faults."""
        with self._lock:
            self.requests.clear()
            self._threads.clear()
            self._runs.clear()
            self._assistants.clear()
            self._faults = None
            self._stream_drops = None

    def drop_streams(
        self, rate: float = 1.0, *, after_event: str = "thread.run.created", seed: int = 0
    ) -> None:
        """Cut off a share of SSE answers (the connection drops) right after one event.

        A dropped stream's run goes on; only its answer stops (no ``done``), as when a
        proxy or the network drops a long-lived connection. :meth:`clear_faults` ends it.

        Args:
            rate: Probability (0..1) that a stream is cut when it sends ``after_event``.
            after_event: The event after which the stream is cut (e.g.
                ``"thread.run.created"``: the run exists, nothing more arrives).
            seed: Seed of the random choice.
        """
        logging.getLogger("uvicorn.error").addFilter(quiet_stream_drops)
        with self._lock:
            self._stream_drops = _StreamDrops(rate, after_event, random.Random(seed))

    def clear_faults(self) -> None:
        """Stop injecting faults (statuses, delays, dropped streams)."""
        with self._lock:
            self._faults = None
            self._stream_drops = None

    def runs(self, thread_id: str | None = None) -> list[dict[str, Any]]:
        """Snapshot of all runs (oldest first), advanced to the current clock.

        Args:
            thread_id: Only the runs of this thread.

        Returns:
            Copies of the run objects.
        """
        with self._lock:
            out = []
            for run in self._runs.values():
                if thread_id is None or run.thread_id == thread_id:
                    self._advance(run)
                    out.append(copy.deepcopy(run.data))
            return out

    # -- ASGI entry --------------------------------------------------------------------

    async def _endpoint(self, request: Request, handler: _Handler) -> Response:
        raw = await request.body()
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        headers = {
            k.lower(): ("<redacted>" if k.lower() in _REDACTED_HEADERS else v)
            for k, v in request.headers.items()
        }
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers=headers,
            json=body,
        )
        self.requests.append(record)
        try:
            response = await self._dispatch(request, record, body, bad_json, handler)
        except ApiError as exc:
            response = self._json(exc.body, exc.status, record)
        except Exception:  # pragma: no cover - a bug in the emulator
            logger.exception("AssistantsEmulator failed on %s %s", request.method, record.path)
            response = self._json(
                error_body(
                    "The server had an error while processing your request.", "server_error"
                ),
                500,
                record,
            )
        record.status = response.status_code
        response.headers["x-request-id"] = "req_" + secrets.token_hex(16)
        response.headers["openai-processing-ms"] = "1"
        return response

    def _fault_json(
        self, record: RecordedRequest, status: int, headers: dict[str, str]
    ) -> Response:
        message, type_, code = _FAULT_MESSAGES.get(
            status, (f"Injected fault: HTTP {status}.", "server_error", None)
        )
        return self._json(error_body(message, type_, None, code), status, record, headers)

    async def _dispatch(
        self,
        request: Request,
        record: RecordedRequest,
        body: Any,
        bad_json: bool,
        handler: _Handler,
    ) -> Response:
        method = request.method
        route = _strip_prefix(record.path)
        faults = self._pick_fault(method, route)
        if faults is not None and not faults.after_commit:
            if faults.delay_seconds > 0:
                await asyncio.sleep(faults.delay_seconds)
            fault = self._fault_response(faults, record)
            if fault is not None:
                return fault
        self._check_auth(request)
        if self.retired and (route.startswith("/threads") or route.startswith("/assistants")):
            raise ApiError(
                404,
                f"Invalid URL ({method} {record.path}): the Assistants API (assistants, "
                "threads, messages and runs) was shut down on 2026-08-26. "
                "Use the Responses API instead.",
            )
        if bad_json:
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)",
            )
        params = {k: str(v) for k, v in request.path_params.items()}
        call = _Call(method, route, params, dict(request.query_params), body, record)
        response = await handler(call)
        if faults is not None and faults.after_commit:
            if faults.delay_seconds > 0:  # committed, but the answer comes late (timeouts)
                await asyncio.sleep(faults.delay_seconds)
            fault = self._fault_response(faults, record)
            if fault is not None:
                return fault
        return response

    def _check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        azure_key = request.headers.get("api-key")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if token == self.api_key or azure_key == self.api_key:
            return
        given = token or azure_key
        if not given:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)",
            )
        shown = f"{given[:3]}*****{given[-4:]}" if len(given) > 8 else "*****"
        raise ApiError(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    # -- routing (Starlette routes) ------------------------------------------------------

    def _routes(self) -> list[BaseRoute]:
        """The API's routes, under ``/v1`` (OpenAI), ``/openai`` (Azure) and the root.

        Every route goes through :meth:`_endpoint` (recording, faults, auth); a path or
        method the API does not have answers OpenAI's 404 "Invalid URL".
        """
        t = "/threads/{thread_id}"
        r = t + "/runs/{run_id}"
        table: list[tuple[str, str, _Handler]] = [
            ("POST", "/assistants", self._create_assistant),
            ("GET", "/assistants", self._list_assistants),
            ("GET", "/assistants/{assistant_id}", self._get_assistant),
            ("POST", "/threads", self._create_thread),
            ("POST", "/threads/runs", self._create_thread_and_run),
            ("GET", t, self._get_thread),
            ("POST", t, self._modify_thread),
            ("DELETE", t, self._delete_thread),
            ("GET", t + "/messages", self._list_messages),
            ("POST", t + "/messages", self._create_message),
            ("GET", t + "/messages/{message_id}", self._get_message),
            ("GET", t + "/runs", self._list_runs),
            ("POST", t + "/runs", self._create_run),
            ("GET", r, self._get_run),
            ("POST", r, self._modify_run),
            ("POST", r + "/cancel", self._cancel_run),
            ("POST", r + "/submit_tool_outputs", self._submit_tool_outputs),
            ("GET", r + "/steps", self._list_steps),
            ("GET", r + "/steps/{step_id}", self._get_step),
        ]
        api: list[BaseRoute] = []
        for method, path, handler in table:
            endpoint = self._route_endpoint(handler)
            api.append(Route(path, endpoint, methods=[method]))
            api.append(Route(path + "/", endpoint, methods=[method]))
        api.append(Route("/{path:path}", self._route_endpoint(self._invalid_url), methods=_METHODS))
        return [*(Mount(prefix, routes=api) for prefix in _PREFIXES), *api]

    def _route_endpoint(self, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._endpoint(request, handler)

        return endpoint

    async def _invalid_url(self, call: _Call) -> Response:
        raise ApiError(404, f"Invalid URL ({call.method} {call.record.path})")
