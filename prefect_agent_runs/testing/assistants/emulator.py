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
import fnmatch
import json
import logging
import math
import random
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from prefect_agent_runs.testing._serve import ServedApp

__all__ = [
    "OUTCOMES",
    "TERMINAL_STATUSES",
    "AssistantsEmulator",
    "FakeClock",
    "RecordedRequest",
]

logger = logging.getLogger(__name__)

OUTCOMES = ("completed", "failed", "expired", "incomplete", "requires_action", "never")
"""Outcomes a run can be scripted to end with."""

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
"""Run statuses after which nothing changes."""

_ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
_PREFIXES = ("/v1", "/openai")
_REDACTED_HEADERS = frozenset({"authorization", "api-key"})
_SCRIPT_KEYS = frozenset(
    {"seconds", "queue_seconds", "outcome", "tool", "tool_arguments", "cancel_seconds", "error"}
)

_RUN_KEYS = frozenset(
    {
        "additional_instructions", "additional_messages", "assistant_id", "instructions",
        "max_completion_tokens", "max_prompt_tokens", "metadata", "model",
        "parallel_tool_calls", "reasoning_effort", "response_format", "stream",
        "temperature", "tool_choice", "tools", "top_p", "truncation_strategy",
    }
)  # fmt: skip
_THREAD_AND_RUN_KEYS = frozenset(
    {
        "assistant_id", "instructions", "max_completion_tokens", "max_prompt_tokens",
        "metadata", "model", "parallel_tool_calls", "response_format", "stream",
        "temperature", "thread", "tool_choice", "tool_resources", "tools", "top_p",
        "truncation_strategy",
    }
)  # fmt: skip
_THREAD_KEYS = frozenset({"messages", "metadata", "tool_resources"})
_MESSAGE_KEYS = frozenset({"attachments", "content", "metadata", "role"})
_ASSISTANT_KEYS = frozenset(
    {
        "description", "instructions", "metadata", "model", "name", "reasoning_effort",
        "response_format", "temperature", "tool_resources", "tools", "top_p",
    }
)  # fmt: skip

_FAULT_MESSAGES = {
    429: ("Rate limit reached for requests. Please try again later.", "requests",
          "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!",
          "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}  # fmt: skip
_HTML_FAULTS = {
    502: "<html>502 Bad Gateway</html>",
    504: "<html>504 Gateway Time-out</html>",
}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class FakeClock:
    """A manual monotonic clock for tests: pass it as ``clock=`` and call :meth:`advance`.

    Args:
        start: The initial reading.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Return the current reading."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward.

        Args:
            seconds: How far to move it.
        """
        with self._lock:
            self._now += seconds


@dataclass
class RecordedRequest:
    """One request the emulator received, with its answer.

    Attributes:
        method: HTTP method.
        path: Request path as received (with the ``/v1`` prefix).
        query: Query parameters (last value wins).
        headers: Lower-cased headers; ``authorization`` / ``api-key`` values are redacted.
        json: The decoded JSON body, or ``None``.
        status: The status answered.
        response_json: The JSON body answered (``None`` for HTML and SSE answers).
        stream_events: ``(event, data)`` pairs of an SSE answer, as sent.
        fault: The status of an injected fault, if one was injected.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    status: int | None = None
    response_json: Any = None
    stream_events: list[tuple[str, Any]] = field(default_factory=list)
    fault: int | None = None

    @property
    def route(self) -> str:
        """The path without the ``/v1`` (or Azure ``/openai``) prefix."""
        return _strip_prefix(self.path)


@dataclass
class _Faults:
    rate: float
    statuses: tuple[int, ...]
    retry_after: float | None
    delay_seconds: float
    rng: random.Random
    paths: tuple[str, ...] | None
    methods: frozenset[str] | None
    after_commit: bool


@dataclass
class _Script:
    seconds: float
    queue_seconds: float
    outcome: str
    cancel_seconds: float
    tool: str = "get_weather"
    tool_arguments: dict[str, Any] | None = None
    error: str = "The emulator was scripted to fail this run."


@dataclass
class _Run:
    data: dict[str, Any]
    thread_id: str
    t0: float
    wall0: float
    script: _Script
    prompt: str
    skew: float = 0.0
    after_tools_at: float | None = None
    cancel_at: float | None = None
    tool_outputs: list[str] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Thread:
    data: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    runs: list[_Run] = field(default_factory=list)


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}


def _strip_prefix(path: str) -> str:
    for prefix in _PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return path[len(prefix) :] or "/"
    return path


def _error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _text_of(message: dict[str, Any]) -> str:
    parts = [p["text"]["value"] for p in message.get("content", []) if p.get("type") == "text"]
    return "\n".join(parts)


def _sse(event: str, data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"event: {event}\ndata: {payload}\n\n"


_Handler = Callable[["_Call"], Awaitable[Response]]


@dataclass
class _Call:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    record: RecordedRequest


class AssistantsEmulator(ServedApp):
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
        clock: Monotonic clock driving run lifecycles (e.g. a :class:`FakeClock`).
        wall_clock: Wall clock for ``created_at`` and other timestamps.
        model: Model reported on runs that name none.
        host: Address to serve on.
        port: Port to serve on (default: a free one).
    """

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
        self.clock = clock
        self.wall_clock = wall_clock
        self.model = model
        self.requests: list[RecordedRequest] = []
        """Every request received, in order (see :class:`RecordedRequest`)."""
        self._lock = threading.RLock()
        self._faults: _Faults | None = None
        self._threads: dict[str, _Thread] = {}
        self._runs: dict[str, _Run] = {}
        self._assistants: dict[str, dict[str, Any]] = {}
        self._routes = self._build_routes()
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._endpoint,
                    methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
                )
            ]
        )

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

    def inject_faults(
        self,
        rate: float = 0.3,
        statuses: Iterable[int] = (429, 500, 502, 503),
        retry_after: float | None = 1,
        delay_seconds: float = 0.0,
        seed: int = 0,
        paths: Iterable[str] | None = None,
        *,
        methods: Iterable[str] | None = None,
        after_commit: bool = False,
    ) -> None:
        """Make a share of requests fail or answer slowly.

        A faulted request waits ``delay_seconds``, then answers a status drawn from
        ``statuses`` (an empty ``statuses`` gives slow but normal answers). 502 and 504
        answer an HTML body like a proxy; others the OpenAI error body.

        Args:
            rate: Probability (0..1) that a matching request is faulted.
            statuses: Statuses to choose from.
            retry_after: Seconds sent as ``Retry-After`` on 429 and 503 (rounded up;
                a non-integer value also sends ``retry-after-ms``); ``None`` omits it.
            delay_seconds: Seconds to wait before answering a faulted request.
            seed: Seed of the random choice, for reproducible tests.
            paths: ``fnmatch`` patterns of paths without the ``/v1`` prefix (e.g.
                ``"/threads/*/runs"``); ``None`` matches every path.
            methods: HTTP methods to fault; ``None`` matches all.
            after_commit: Handle the request first (e.g. really create the run), then wait
                and answer the fault, like a server or proxy that fails after committing.
                With ``statuses=()`` and a ``delay_seconds`` above the client's read
                timeout, the client times out although the run exists.
        """
        with self._lock:
            self._faults = _Faults(
                rate=rate,
                statuses=tuple(statuses),
                retry_after=retry_after,
                delay_seconds=delay_seconds,
                rng=random.Random(seed),
                paths=tuple(paths) if paths is not None else None,
                methods=frozenset(m.upper() for m in methods) if methods is not None else None,
                after_commit=after_commit,
            )

    def clear_faults(self) -> None:
        """Stop injecting faults."""
        with self._lock:
            self._faults = None

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

    async def _endpoint(self, request: Request) -> Response:
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
            response = await self._dispatch(request, record, body, bad_json)
        except _ApiError as exc:
            response = self._json(exc.body, exc.status, record)
        except Exception:  # pragma: no cover - a bug in the emulator
            logger.exception("AssistantsEmulator failed on %s %s", request.method, record.path)
            response = self._json(
                _error_body(
                    "The server had an error while processing your request.", "server_error"
                ),
                500,
                record,
            )
        record.status = response.status_code
        response.headers["x-request-id"] = "req_" + secrets.token_hex(16)
        response.headers["openai-processing-ms"] = "1"
        return response

    def _json(
        self,
        obj: Any,
        status: int,
        record: RecordedRequest,
        headers: dict[str, str] | None = None,
    ) -> Response:
        record.response_json = obj
        return JSONResponse(obj, status_code=status, headers=headers)

    def _pick_fault(self, method: str, route: str) -> _Faults | None:
        with self._lock:
            faults = self._faults
            if faults is None:
                return None
            if faults.methods is not None and method not in faults.methods:
                return None
            if faults.paths is not None and not any(
                fnmatch.fnmatchcase(route, p) for p in faults.paths
            ):
                return None
            if faults.rng.random() >= faults.rate:
                return None
            return faults

    def _fault_response(self, faults: _Faults, record: RecordedRequest) -> Response | None:
        if not faults.statuses:
            return None
        with self._lock:
            status = faults.rng.choice(faults.statuses)
        record.fault = status
        if status in _HTML_FAULTS:
            record.response_json = None
            return Response(_HTML_FAULTS[status], status_code=status, media_type="text/html")
        headers: dict[str, str] = {}
        if status in (429, 503) and faults.retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(faults.retry_after)))
            if float(faults.retry_after) != int(faults.retry_after):
                headers["retry-after-ms"] = str(int(faults.retry_after * 1000))
        message, type_, code = _FAULT_MESSAGES.get(
            status, (f"Injected fault: HTTP {status}.", "server_error", None)
        )
        return self._json(_error_body(message, type_, None, code), status, record, headers)

    async def _dispatch(
        self, request: Request, record: RecordedRequest, body: Any, bad_json: bool
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
            raise _ApiError(
                404,
                f"Invalid URL ({method} {record.path}): the Assistants API (assistants, "
                "threads, messages and runs) was shut down on 2026-08-26. "
                "Use the Responses API instead.",
            )
        if bad_json:
            raise _ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)",
            )
        handler, params = self._route(method, route, record.path)
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
            raise _ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)",
            )
        shown = f"{given[:3]}*****{given[-4:]}" if len(given) > 8 else "*****"
        raise _ApiError(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], _Handler]]:
        seg = r"(?P<{}>[^/]+)"
        t = "/threads/" + seg.format("thread_id")
        r = t + "/runs/" + seg.format("run_id")
        table: list[tuple[str, str, _Handler]] = [
            ("POST", "/assistants", self._create_assistant),
            ("GET", "/assistants", self._list_assistants),
            ("GET", "/assistants/" + seg.format("assistant_id"), self._get_assistant),
            ("POST", "/threads", self._create_thread),
            ("POST", "/threads/runs", self._create_thread_and_run),
            ("GET", t, self._get_thread),
            ("POST", t, self._modify_thread),
            ("DELETE", t, self._delete_thread),
            ("GET", t + "/messages", self._list_messages),
            ("POST", t + "/messages", self._create_message),
            ("GET", t + "/messages/" + seg.format("message_id"), self._get_message),
            ("GET", t + "/runs", self._list_runs),
            ("POST", t + "/runs", self._create_run),
            ("GET", r, self._get_run),
            ("POST", r, self._modify_run),
            ("POST", r + "/cancel", self._cancel_run),
            ("POST", r + "/submit_tool_outputs", self._submit_tool_outputs),
            ("GET", r + "/steps", self._list_steps),
            ("GET", r + "/steps/" + seg.format("step_id"), self._get_step),
        ]
        return [(m, re.compile(f"^{p}/?$"), h) for m, p, h in table]

    def _route(self, method: str, route: str, full_path: str) -> tuple[_Handler, dict[str, str]]:
        for m, regex, handler in self._routes:
            match = regex.match(route)
            if match and m == method:
                return handler, match.groupdict()
        raise _ApiError(404, f"Invalid URL ({method} {full_path})")

    # -- helpers -----------------------------------------------------------------------

    def _wall(self, run: _Run, mono: float) -> int:
        return int(run.wall0 + (mono - run.t0))

    def _now(self, run: _Run) -> float:
        return self.clock() + run.skew

    def _thread_rec(self, thread_id: str) -> _Thread:
        thread = self._threads.get(thread_id)
        if thread is None:
            raise _ApiError(404, f"No thread found with id '{thread_id}'.")
        return thread

    def _run_rec(self, thread_id: str, run_id: str) -> _Run:
        self._thread_rec(thread_id)
        run = self._runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise _ApiError(404, f"No run found with id '{run_id}'.")
        self._advance(run)
        return run

    def _run_response(self, run: _Run, record: RecordedRequest) -> Response:
        headers = {}
        if self.poll_after_ms is not None:
            headers["openai-poll-after-ms"] = str(self.poll_after_ms)
        return self._json(copy.deepcopy(run.data), 200, record, headers)

    @staticmethod
    def _object_body(
        call: _Call, allowed: frozenset[str], *, required: bool = False
    ) -> dict[str, Any]:
        body = call.body
        if body is None:
            if required:
                raise _ApiError(400, "Missing required body.")
            return {}
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise _ApiError(
                400,
                f"Unrecognized request argument supplied: {unknown[0]}",
                param=unknown[0],
                code="unknown_parameter",
            )
        return body

    @staticmethod
    def _require(body: dict[str, Any], name: str) -> Any:
        if body.get(name) is None:
            raise _ApiError(
                400,
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
        return body[name]

    @staticmethod
    def _metadata(value: Any, param: str = "metadata") -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _ApiError(400, f"Invalid type for '{param}': expected an object.", param=param)
        if len(value) > 16:
            raise _ApiError(400, f"Invalid '{param}': too many properties (max 16).", param=param)
        for key, val in value.items():
            if len(key) > 64:
                raise _ApiError(400, f"Invalid '{param}': key longer than 64.", param=param)
            if not isinstance(val, str) or len(val) > 512:
                raise _ApiError(
                    400,
                    f"Invalid '{param}.{key}': expected a string of at most 512 characters.",
                    param=f"{param}.{key}",
                )
        return dict(value)

    def _assistant_defaults(self, assistant_id: Any) -> dict[str, Any]:
        if not isinstance(assistant_id, str) or not assistant_id.startswith("asst_"):
            raise _ApiError(404, f"No assistant found with id '{assistant_id}'.")
        return self._assistants.get(assistant_id, {})

    def _new_message(
        self,
        thread: _Thread,
        body: dict[str, Any],
        *,
        param: str = "content",
        run_id: str | None = None,
        assistant_id: str | None = None,
        created_at: int | None = None,
    ) -> dict[str, Any]:
        role = self._require(body, "role")
        if role not in ("user", "assistant"):
            raise _ApiError(
                400,
                f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.",
                param="role",
                code="invalid_value",
            )
        content = self._require(body, "content")
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": {"value": content, "annotations": []}})
        elif isinstance(content, list) and content:
            for part in content:
                if not isinstance(part, dict) or "type" not in part:
                    raise _ApiError(400, f"Invalid '{param}': bad content part.", param=param)
                if part["type"] == "text":
                    text = part.get("text")
                    value = text if isinstance(text, str) else (text or {}).get("value", "")
                    parts.append({"type": "text", "text": {"value": value, "annotations": []}})
                else:
                    parts.append(part)
        else:
            raise _ApiError(
                400, f"Invalid '{param}': expected a string or a non-empty array.", param=param
            )
        stamp = int(self.wall_clock()) if created_at is None else created_at
        message = {
            "id": _new_id("msg"),
            "object": "thread.message",
            "created_at": stamp,
            "thread_id": thread.data["id"],
            "status": "completed",
            "incomplete_details": None,
            "completed_at": stamp if role == "assistant" else None,
            "incomplete_at": None,
            "role": role,
            "content": parts,
            "assistant_id": assistant_id,
            "run_id": run_id,
            "attachments": body.get("attachments") or [],
            "metadata": self._metadata(body.get("metadata")),
        }
        thread.messages.append(message)
        return message

    def _new_thread(self, body: dict[str, Any]) -> _Thread:
        metadata = self._metadata(body.get("metadata"))
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise _ApiError(400, "Invalid 'messages': expected an array.", param="messages")
        thread = _Thread(
            data={
                "id": _new_id("thread"),
                "object": "thread",
                "created_at": int(self.wall_clock()),
                "tool_resources": body.get("tool_resources") or {},
                "metadata": metadata,
            }
        )
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise _ApiError(400, f"Invalid 'messages[{i}]'.", param=f"messages[{i}]")
            self._object_body(_Call("", "", {}, {}, message, _DUMMY), _MESSAGE_KEYS)
            self._new_message(thread, message, param=f"messages[{i}].content")
        self._threads[thread.data["id"]] = thread
        return thread

    def _active_run(self, thread: _Thread) -> _Run | None:
        for run in thread.runs:
            self._advance(run)
            if run.data["status"] in _ACTIVE:
                return run
        return None

    def _script(self, metadata: dict[str, str]) -> _Script:
        script = _Script(
            seconds=self.run_seconds,
            queue_seconds=self.queue_seconds,
            outcome=self.outcome,
            cancel_seconds=self.cancel_seconds,
        )
        raw = metadata.get("emulator")
        if raw is None:
            return script
        try:
            spec = json.loads(raw)
            if not isinstance(spec, dict):
                raise ValueError("not an object")
            unknown = set(spec) - _SCRIPT_KEYS
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            if "outcome" in spec and spec["outcome"] not in OUTCOMES:
                raise ValueError(f"outcome must be one of {list(OUTCOMES)}")
            for key in ("seconds", "queue_seconds", "cancel_seconds"):
                if key in spec:
                    setattr(script, key, float(spec[key]))
            for key in ("outcome", "tool", "error"):
                if key in spec:
                    setattr(script, key, str(spec[key]))
            if "tool_arguments" in spec:
                if not isinstance(spec["tool_arguments"], dict):
                    raise ValueError("tool_arguments must be an object")
                script.tool_arguments = spec["tool_arguments"]
        except (ValueError, TypeError) as exc:
            raise _ApiError(
                400,
                f"Invalid 'metadata.emulator' (emulator script): {exc}",
                param="metadata.emulator",
            ) from exc
        return script

    def _start_run(self, thread: _Thread, body: dict[str, Any], *, allow_additional: bool) -> _Run:
        assistant_id = self._require(body, "assistant_id")
        assistant = self._assistant_defaults(assistant_id)
        active = self._active_run(thread)
        if active is not None:
            raise _ApiError(
                400,
                f"Thread {thread.data['id']} already has an active run {active.data['id']}.",
            )
        metadata = self._metadata(body.get("metadata"))
        script = self._script(metadata)
        if allow_additional:
            extra = body.get("additional_messages") or []
            if not isinstance(extra, list):
                raise _ApiError(400, "Invalid 'additional_messages'.", param="additional_messages")
            for i, message in enumerate(extra):
                if not isinstance(message, dict):
                    raise _ApiError(
                        400, "Invalid 'additional_messages'.", param="additional_messages"
                    )
                self._new_message(thread, message, param=f"additional_messages[{i}].content")
        prompt = next((_text_of(m) for m in reversed(thread.messages) if m["role"] == "user"), "")
        instructions = body.get("instructions")
        if instructions is None:
            instructions = assistant.get("instructions") or ""
        if body.get("additional_instructions"):
            instructions = f"{instructions}\n{body['additional_instructions']}".strip()
        t0 = self.clock()
        wall0 = self.wall_clock()
        created = int(wall0)

        def pick(name: str, default: Any) -> Any:
            value = body.get(name)
            return default if value is None else value

        data: dict[str, Any] = {
            "id": _new_id("run"),
            "object": "thread.run",
            "created_at": created,
            "thread_id": thread.data["id"],
            "assistant_id": assistant_id,
            "status": "queued",
            "required_action": None,
            "last_error": None,
            "expires_at": int(created + self.expires_seconds),
            "started_at": None,
            "cancelled_at": None,
            "failed_at": None,
            "completed_at": None,
            "model": pick("model", assistant.get("model") or self.model),
            "instructions": instructions,
            "tools": pick("tools", assistant.get("tools") or []),
            "metadata": metadata,
            "usage": None,
            "incomplete_details": None,
            "max_prompt_tokens": body.get("max_prompt_tokens"),
            "max_completion_tokens": body.get("max_completion_tokens"),
            "truncation_strategy": pick(
                "truncation_strategy", {"type": "auto", "last_messages": None}
            ),
            "tool_choice": pick("tool_choice", "auto"),
            "parallel_tool_calls": pick("parallel_tool_calls", True),
            "response_format": pick("response_format", assistant.get("response_format") or "auto"),
            "temperature": pick("temperature", assistant.get("temperature") or 1.0),
            "top_p": pick("top_p", assistant.get("top_p") or 1.0),
        }
        run = _Run(data=data, thread_id=thread.data["id"], t0=t0, wall0=wall0, script=script,
                   prompt=prompt)  # fmt: skip
        run.events.append(("thread.run.created", copy.deepcopy(data)))
        run.events.append(("thread.run.queued", copy.deepcopy(data)))
        thread.runs.append(run)
        self._runs[data["id"]] = run
        return run  # answered as "queued", as OpenAI does; it advances on the next read

    # -- the lifecycle -----------------------------------------------------------------

    def _set_status(self, run: _Run, status: str) -> None:
        run.data["status"] = status
        run.events.append((f"thread.run.{status}", copy.deepcopy(run.data)))

    def _usage(self, run: _Run, reply: str = "") -> dict[str, int]:
        prompt_tokens = max(1, len(run.prompt.split())) + len(run.tool_outputs)
        completion_tokens = len(reply.split())
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _work_end(self, run: _Run) -> tuple[float, float]:
        """Return (start of in_progress, end of the current work phase) in run time."""
        start = run.t0 + run.script.queue_seconds
        if run.after_tools_at is not None:
            return start, run.after_tools_at + run.script.seconds
        return start, start + run.script.seconds

    def _next_transition(self, run: _Run) -> float | None:
        status = run.data["status"]
        if status in TERMINAL_STATUSES:
            return None
        if run.cancel_at is not None:
            return run.cancel_at + run.script.cancel_seconds
        if status == "requires_action":
            return run.t0 + self.expires_seconds
        start, end = self._work_end(run)
        if self._now(run) < start:
            return start
        if run.script.outcome == "never" and run.after_tools_at is None:
            return None
        return end

    def _advance(self, run: _Run) -> None:
        now = self._now(run)
        data = run.data
        if data["status"] in TERMINAL_STATUSES:
            return
        if run.cancel_at is not None:
            done_at = run.cancel_at + run.script.cancel_seconds
            if now >= done_at:
                data["cancelled_at"] = self._wall(run, done_at)
                data["required_action"] = None
                data["usage"] = self._usage(run)
                self._set_status(run, "cancelled")
            return
        if data["status"] == "requires_action":
            expire_at = run.t0 + self.expires_seconds
            if now >= expire_at:
                data["required_action"] = None
                data["usage"] = self._usage(run)
                self._set_status(run, "expired")
            return
        start, end = self._work_end(run)
        if now < start:
            return
        if data["status"] == "queued":
            data["started_at"] = self._wall(run, start)
            self._set_status(run, "in_progress")
        outcome = run.script.outcome if run.after_tools_at is None else "completed"
        if outcome == "never" or now < end:
            return
        stamp = self._wall(run, end)
        if outcome == "completed":
            reply = f"echo: {run.prompt}"
            if run.tool_outputs:
                reply += f" [tool: {', '.join(run.tool_outputs)}]"
            self._complete_with_message(run, reply, stamp)
        elif outcome == "failed":
            data["failed_at"] = stamp
            data["last_error"] = {"code": "server_error", "message": run.script.error}
            data["usage"] = self._usage(run)
            self._set_status(run, "failed")
        elif outcome == "expired":
            data["usage"] = self._usage(run)
            self._set_status(run, "expired")
        elif outcome == "incomplete":
            data["incomplete_details"] = {"reason": "max_completion_tokens"}
            data["usage"] = self._usage(run)
            self._set_status(run, "incomplete")
        elif outcome == "requires_action":
            arguments = run.script.tool_arguments
            if arguments is None:
                arguments = {"city": run.prompt or "Paris"}
            data["required_action"] = {
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {
                    "tool_calls": [
                        {
                            "id": _new_id("call"),
                            "type": "function",
                            "function": {
                                "name": run.script.tool,
                                "arguments": json.dumps(arguments),
                            },
                        }
                    ]
                },
            }
            self._set_status(run, "requires_action")

    def _complete_with_message(self, run: _Run, reply: str, stamp: int) -> None:
        thread = self._threads.get(run.thread_id)
        data = run.data
        if thread is not None:
            message = self._new_message(
                thread,
                {"role": "assistant", "content": reply},
                run_id=data["id"],
                assistant_id=data["assistant_id"],
                created_at=stamp,
            )
            created = {**copy.deepcopy(message), "status": "in_progress", "content": [],
                       "completed_at": None}  # fmt: skip
            run.events.append(("thread.message.created", created))
            run.events.append(("thread.message.in_progress", copy.deepcopy(created)))
            run.events.append(
                (
                    "thread.message.delta",
                    {
                        "id": message["id"],
                        "object": "thread.message.delta",
                        "delta": {
                            "content": [
                                {
                                    "index": 0,
                                    "type": "text",
                                    "text": {"value": reply, "annotations": []},
                                }
                            ]
                        },
                    },
                )
            )
            run.events.append(("thread.message.completed", copy.deepcopy(message)))
            run.steps.append(
                {
                    "id": _new_id("step"),
                    "object": "thread.run.step",
                    "created_at": stamp,
                    "assistant_id": data["assistant_id"],
                    "thread_id": run.thread_id,
                    "run_id": data["id"],
                    "type": "message_creation",
                    "status": "completed",
                    "step_details": {
                        "type": "message_creation",
                        "message_creation": {"message_id": message["id"]},
                    },
                    "last_error": None,
                    "expired_at": None,
                    "cancelled_at": None,
                    "failed_at": None,
                    "completed_at": stamp,
                    "metadata": {},
                    "usage": self._usage(run, reply),
                }
            )
        data["completed_at"] = stamp
        data["usage"] = self._usage(run, reply)
        self._set_status(run, "completed")

    # -- streaming ---------------------------------------------------------------------

    def _stream(
        self,
        run: _Run,
        record: RecordedRequest,
        *,
        first_event: int = 0,
        prefix: list[tuple[str, Any]] | None = None,
    ) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for name, data in prefix or []:
                record.stream_events.append((name, data))
                yield _sse(name, data)
            index = first_event
            while True:
                with self._lock:
                    self._advance(run)
                    pending = run.events[index:]
                    index = len(run.events)
                    status = run.data["status"]
                    target = self._next_transition(run)
                    now = self._now(run)
                for name, data in pending:
                    record.stream_events.append((name, data))
                    yield _sse(name, data)
                if status in TERMINAL_STATUSES or (
                    status == "requires_action" and run.cancel_at is None
                ):
                    break
                if target is None:  # "never": keep the stream open on the real clock
                    await asyncio.sleep(0.05)
                    continue
                wait = max(0.0, target - now)
                real = min(wait, max(self.run_seconds, 0.01))
                if real > 0:
                    await asyncio.sleep(real)
                with self._lock:
                    behind = target - self._now(run)
                    if behind > 0:  # compress time: jump this run to its next transition
                        run.skew += behind
            record.stream_events.append(("done", "[DONE]"))
            yield _sse("done", "[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- handlers: assistants ----------------------------------------------------------

    async def _create_assistant(self, call: _Call) -> Response:
        with self._lock:
            body = self._object_body(call, _ASSISTANT_KEYS, required=True)
            model = self._require(body, "model")
            assistant = {
                "id": _new_id("asst"),
                "object": "assistant",
                "created_at": int(self.wall_clock()),
                "name": body.get("name"),
                "description": body.get("description"),
                "model": model,
                "instructions": body.get("instructions"),
                "tools": body.get("tools") or [],
                "tool_resources": body.get("tool_resources") or {},
                "metadata": self._metadata(body.get("metadata")),
                "temperature": body.get("temperature", 1.0),
                "top_p": body.get("top_p", 1.0),
                "response_format": body.get("response_format") or "auto",
            }
            self._assistants[assistant["id"]] = assistant
            return self._json(copy.deepcopy(assistant), 200, call.record)

    async def _get_assistant(self, call: _Call) -> Response:
        with self._lock:
            assistant = self._assistants.get(call.params["assistant_id"])
            if assistant is None:
                raise _ApiError(404, f"No assistant found with id '{call.params['assistant_id']}'.")
            return self._json(copy.deepcopy(assistant), 200, call.record)

    async def _list_assistants(self, call: _Call) -> Response:
        with self._lock:
            page = _paginate(list(self._assistants.values()), call.query)
            return self._json(page, 200, call.record)

    # -- handlers: threads and messages ------------------------------------------------

    async def _create_thread(self, call: _Call) -> Response:
        with self._lock:
            body = self._object_body(call, _THREAD_KEYS)
            thread = self._new_thread(body)
            return self._json(copy.deepcopy(thread.data), 200, call.record)

    async def _get_thread(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            return self._json(copy.deepcopy(thread.data), 200, call.record)

    async def _modify_thread(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            body = self._object_body(call, frozenset({"metadata", "tool_resources"}))
            if "metadata" in body:
                thread.data["metadata"] = self._metadata(body["metadata"])
            if body.get("tool_resources") is not None:
                thread.data["tool_resources"] = body["tool_resources"]
            return self._json(copy.deepcopy(thread.data), 200, call.record)

    async def _delete_thread(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            del self._threads[thread.data["id"]]
            for run in thread.runs:
                self._runs.pop(run.data["id"], None)
            body = {"id": thread.data["id"], "object": "thread.deleted", "deleted": True}
            return self._json(body, 200, call.record)

    async def _create_message(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            body = self._object_body(call, _MESSAGE_KEYS, required=True)
            active = self._active_run(thread)
            if active is not None:
                raise _ApiError(
                    400,
                    f"Can't add messages to {thread.data['id']} while a run "
                    f"{active.data['id']} is active.",
                )
            message = self._new_message(thread, body)
            return self._json(copy.deepcopy(message), 200, call.record)

    async def _get_message(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            for run in thread.runs:
                self._advance(run)
            for message in thread.messages:
                if message["id"] == call.params["message_id"]:
                    return self._json(copy.deepcopy(message), 200, call.record)
            raise _ApiError(404, f"No message found with id '{call.params['message_id']}'.")

    async def _list_messages(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            for run in thread.runs:
                self._advance(run)
            run_id = call.query.get("run_id")
            page = _paginate(
                thread.messages,
                call.query,
                keep=None if run_id is None else (lambda m: m["run_id"] == run_id),
            )
            return self._json(copy.deepcopy(page), 200, call.record)

    # -- handlers: runs ----------------------------------------------------------------

    async def _create_thread_and_run(self, call: _Call) -> Response:
        with self._lock:
            body = self._object_body(call, _THREAD_AND_RUN_KEYS, required=True)
            self._require(body, "assistant_id")
            self._assistant_defaults(body["assistant_id"])
            self._metadata(body.get("metadata"))
            self._script(self._metadata(body.get("metadata")))
            thread_body = body.get("thread") or {}
            if not isinstance(thread_body, dict):
                raise _ApiError(400, "Invalid 'thread': expected an object.", param="thread")
            self._object_body(_Call("", "", {}, {}, thread_body, _DUMMY), _THREAD_KEYS)
            thread = self._new_thread(thread_body)
            if body.get("tool_resources") is not None:
                thread.data["tool_resources"] = body["tool_resources"]
            run = self._start_run(thread, body, allow_additional=False)
            if body.get("stream"):
                prefix = [("thread.created", copy.deepcopy(thread.data))]
                return self._stream(run, call.record, prefix=prefix)
            return self._run_response(run, call.record)

    async def _create_run(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            body = self._object_body(call, _RUN_KEYS, required=True)
            run = self._start_run(thread, body, allow_additional=True)
            if body.get("stream"):
                return self._stream(run, call.record)
            return self._run_response(run, call.record)

    async def _list_runs(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            for run in thread.runs:
                self._advance(run)
            page = _paginate([r.data for r in thread.runs], call.query)
            return self._json(copy.deepcopy(page), 200, call.record)

    async def _get_run(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            return self._run_response(run, call.record)

    async def _modify_run(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            body = self._object_body(call, frozenset({"metadata"}))
            if "metadata" in body:
                run.data["metadata"] = self._metadata(body["metadata"])
            return self._run_response(run, call.record)

    async def _cancel_run(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            status = run.data["status"]
            if status not in ("queued", "in_progress", "requires_action"):
                raise _ApiError(400, f"Cannot cancel run with status '{status}'.")
            run.cancel_at = self._now(run)
            self._set_status(run, "cancelling")
            self._advance(run)
            return self._run_response(run, call.record)

    async def _submit_tool_outputs(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            body = self._object_body(call, frozenset({"tool_outputs", "stream"}), required=True)
            outputs = self._require(body, "tool_outputs")
            status = run.data["status"]
            if status != "requires_action" or run.data["required_action"] is None:
                raise _ApiError(400, f'Runs in status "{status}" do not accept tool outputs.')
            if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
                raise _ApiError(400, "Invalid 'tool_outputs'.", param="tool_outputs")
            calls = run.data["required_action"]["submit_tool_outputs"]["tool_calls"]
            expected = sorted(c["id"] for c in calls)
            given = sorted(str(o.get("tool_call_id")) for o in outputs)
            if expected != given:
                raise _ApiError(
                    400,
                    f"Expected tool outputs for call_ids {expected}, got {given}",
                    param="tool_outputs",
                )
            run.tool_outputs = [str(o.get("output", "")) for o in outputs]
            run.after_tools_at = self._now(run)
            run.data["required_action"] = None
            first_event = len(run.events)
            self._set_status(run, "queued")
            self._set_status(run, "in_progress")
            self._advance(run)
            if body.get("stream"):
                return self._stream(run, call.record, first_event=first_event)
            return self._run_response(run, call.record)

    async def _list_steps(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            page = _paginate(run.steps, call.query)
            return self._json(copy.deepcopy(page), 200, call.record)

    async def _get_step(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            for step in run.steps:
                if step["id"] == call.params["step_id"]:
                    return self._json(copy.deepcopy(step), 200, call.record)
            raise _ApiError(404, f"No run step found with id '{call.params['step_id']}'.")


_DUMMY = RecordedRequest("", "", {}, {}, None)


def _paginate(
    items: list[dict[str, Any]],
    query: dict[str, str],
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Cursor pagination like OpenAI's: ``limit``, ``order``, ``after``, ``before``."""
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise _ApiError(
            400, f"Invalid 'limit': expected an integer, got '{raw_limit}'.", param="limit",
            code="invalid_type",
        ) from None  # fmt: skip
    if not 1 <= limit <= 100:
        code = "integer_below_min_value" if limit < 1 else "integer_above_max_value"
        raise _ApiError(
            400,
            f"Invalid 'limit': integer {'below minimum' if limit < 1 else 'above maximum'} "
            f"value. Expected a value {'>= 1' if limit < 1 else '<= 100'}, but got {limit} "
            "instead.",
            param="limit",
            code=code,
        )
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise _ApiError(
            400,
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
            param="order",
            code="invalid_value",
        )
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [item["id"] for item in ordered]
    for name in ("after", "before"):
        cursor = query.get(name)
        if cursor is None:
            continue
        if cursor not in ids:
            raise _ApiError(
                400, f"Invalid '{name}': no object with id '{cursor}' in this list.", param=name
            )
        index = ids.index(cursor)
        if name == "after":
            ordered, ids = ordered[index + 1 :], ids[index + 1 :]
        else:
            ordered, ids = ordered[:index], ids[:index]
    if keep is not None:
        ordered = [item for item in ordered if keep(item)]
    backwards = "before" in query and "after" not in query
    page = ordered[-limit:] if backwards else ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > limit,
    }
