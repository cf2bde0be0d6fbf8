"""An in-memory emulator of the project thread-runs API (AgileMantis, an ASP.NET service).

It answers as the service's swagger (``testing/schemas/project-threads-swagger.json``) and
its documentation say, under both path forms: ``/api/teams/{teamId}/projects/{projectId}/...``
(the swagger) and ``/api/projects/{projectId}/...`` (the prose documentation):

* ``POST .../threads/{threadId}/runs`` with ``{message (1..4000), instructions (<= 2000)}``
  -> 201 ``RunResponse``; ``GET .../threads/{threadId}/runs/{runId}`` -> ``RunResponse``;
* ``GET .../threads/{threadId}`` -> the thread and all its messages;
  ``GET .../threads`` -> threads with ``after``/``before`` cursors;
  ``POST .../chat`` -> starts (or continues) a thread and answers at once;
* 400 is ASP.NET ``ProblemDetails`` with field ``errors``; 401, 403, 404 and 500 are
  ``{"message"[, "details"]}``; ``X-Correlation-Id`` is echoed back.

Example:
    ```python
    import httpx
    from prefect_agent_runs.testing import ProjectThreadsEmulator

    with ProjectThreadsEmulator(run_seconds=0.05) as emu:
        thread_id = emu.create_thread()
        url = f"{emu.base_url}/api/projects/{emu.project_id}/threads/{thread_id}/runs"
        run = httpx.post(url, json={"message": "hi"}).json()  # 201, status "queued"
    ```

A run goes ``queued`` -> ``in_progress`` -> ``completed`` (an assistant message
``"echo: <message>"`` is added to the thread), ``failed`` (``errorMessage``) or ``expired``.
The request has no metadata, so a run is scripted through a line of its ``instructions``
that starts with ``emulator:`` followed by a JSON object, e.g.
``emulator: {"seconds": 2, "outcome": "failed"}``. Keys: ``seconds``, ``queue_seconds``,
``outcome`` (``completed``, ``failed``, ``expired``, ``never``), ``reply``, ``error``.

The messages a run adds carry ``metadata`` ``'{"runId": "run_..."}'`` (a JSON string; the
swagger types message metadata as a string). That is this emulator's choice, not a documented
fact of the service; ``message_run_ids=False`` turns it off.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from prefect_agent_runs.testing._emulator import (
    EmulatorBase,
    Handler,
    HttpError,
    iso,
    new_id,
    parse_script,
)
from prefect_agent_runs.testing.assistants import RecordedRequest

__all__ = ["DEFAULT_PROJECT_ID", "DEFAULT_TEAM_ID", "OUTCOMES", "ProjectThreadsEmulator"]

OUTCOMES = ("completed", "failed", "expired", "never")
"""Outcomes a run can be scripted to end with."""

DEFAULT_PROJECT_ID = "123e4567-e89b-12d3-a456-426614174000"
"""The project the emulator serves unless told otherwise (the documentation's example id)."""

DEFAULT_TEAM_ID = "0b7c9a52-6d3e-4f1a-9c2b-5e8d7f6a4b31"
"""The team of that project."""

MESSAGE_MAX = 4000
INSTRUCTIONS_MAX = 2000
_SCRIPT_KEYS = frozenset({"seconds", "queue_seconds", "outcome", "reply", "error"})
_SCRIPT_LINE = re.compile(r"^\s*emulator:\s*(\{.*\})\s*$", re.MULTILINE)
_VALIDATION_TYPE = "https://tools.ietf.org/html/rfc7231#section-6.5.1"
_TERMINAL = frozenset({"completed", "failed", "expired"})
_PREFIXES = ("/api/teams/{team_id}/projects/{project_id}", "/api/projects/{project_id}")


def _problem(errors: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "type": _VALIDATION_TYPE,
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": errors,
        "traceId": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00",
    }


@dataclass
class _Run:
    data: dict[str, Any]
    t0: float
    wall0: float
    script: dict[str, Any]
    message: str


@dataclass
class _Thread:
    thread_id: str
    project_id: str
    created: float
    messages: list[dict[str, Any]] = field(default_factory=list)
    runs: list[_Run] = field(default_factory=list)


class ProjectThreadsEmulator(EmulatorBase):
    """Emulates the project thread-runs API (both the team and the short path forms).

    Args:
        run_seconds: How long a run stays ``in_progress`` before its outcome.
        queue_seconds: How long a run stays ``queued`` first.
        outcome: The outcome of every run not scripted through its instructions.
        token: If set, requests must carry ``Authorization: Bearer <token>`` (else 401).
        project_id: The project served; another project id answers 403.
        team_id: The project's team; another team id answers 403.
        assistant_id: The ``assistantId`` reported on runs.
        message_run_ids: Put ``{"runId": ...}`` in the metadata of the messages a run adds.
        clock: Monotonic clock driving run lifecycles (e.g. a ``FakeClock``).
        wall_clock: Wall clock for timestamps.
        host: Address to serve on.
        port: Port to serve on (default: a free one).
    """

    def __init__(
        self,
        *,
        run_seconds: float = 0.2,
        queue_seconds: float = 0.0,
        outcome: str = "completed",
        token: str | None = None,
        project_id: str = DEFAULT_PROJECT_ID,
        team_id: str = DEFAULT_TEAM_ID,
        assistant_id: str = "asst_emulator",
        message_run_ids: bool = True,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        super().__init__(
            run_seconds=run_seconds,
            queue_seconds=queue_seconds,
            outcome=outcome,
            outcomes=OUTCOMES,
            clock=clock,
            wall_clock=wall_clock,
            host=host,
            port=port,
        )
        self.token = token
        self.project_id = project_id
        self.team_id = team_id
        self.assistant_id = assistant_id
        self.message_run_ids = message_run_ids
        self._threads: dict[str, _Thread] = {}

    def reset(self) -> None:
        """Forget every thread, run, recorded request, fault and stream drop."""
        with self._lock:
            self._threads.clear()
            super().reset()

    def create_thread(self, messages: Iterable[tuple[str, str]] = ()) -> str:
        """Create a thread in the served project (the service creates them through chat).

        Args:
            messages: ``(role, content)`` pairs to start it with.

        Returns:
            The new thread's id.
        """
        with self._lock:
            thread = _Thread(new_id("thread"), self.project_id, self.wall_clock())
            for role, content in messages:
                self._add_message(thread, role, content, None)
            self._threads[thread.thread_id] = thread
            return thread.thread_id

    def thread_messages(self, thread_id: str) -> list[dict[str, Any]]:
        """Snapshot of a thread's messages, runs advanced to the current clock.

        Args:
            thread_id: The thread.
        """
        with self._lock:
            thread = self._threads[thread_id]
            for run in thread.runs:
                self._advance(thread, run)
            return copy.deepcopy(thread.messages)

    def runs(self) -> list[dict[str, Any]]:
        """Snapshot of every run (oldest first, thread by thread), advanced to the clock."""
        with self._lock:
            out = []
            for thread in self._threads.values():
                for run in thread.runs:
                    self._advance(thread, run)
                    out.append(copy.deepcopy(run.data))
            return out

    # -- EmulatorBase ------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler]]:
        """The routes, under both path forms."""
        out: list[tuple[str, str, Handler]] = []
        for prefix in _PREFIXES:
            out += [
                ("POST", f"{prefix}/chat", self._chat),
                ("GET", f"{prefix}/threads", self._list_threads),
                ("GET", f"{prefix}/threads/{{thread_id}}", self._get_thread),
                ("POST", f"{prefix}/threads/{{thread_id}}/runs", self._create_run),
                ("GET", f"{prefix}/threads/{{thread_id}}/runs/{{run_id}}", self._get_run),
            ]
        return out

    def fault_body(self, status: int, method: str, path: str) -> Any:
        """The service's ``{message, details}`` (or ProblemDetails for 400) for a fault."""
        if status == 400:
            return _problem({"$": ["The request body is not valid JSON."]})
        if status == 500:
            if method == "POST" and path.rstrip("/").endswith("/runs"):
                message = "Failed to create thread run"
            elif "/runs/" in path:
                message = "An error occurred while checking the run status"
            else:
                message = "An error occurred while processing the request"
            return {"message": message, "details": "Injected fault (HTTP 500)."}
        messages = {401: "Unauthorized access", 403: "Access denied to project",
                    404: "Not found", 429: "Too many requests", 503: "Service unavailable"}  # fmt: skip
        return {"message": messages.get(status, f"HTTP {status}")}

    def not_found_body(self, path: str) -> Any:
        """ASP.NET's ProblemDetails for a path with no endpoint."""
        return {
            "type": "https://tools.ietf.org/html/rfc9110#section-15.5.5",
            "title": "Not Found",
            "status": 404,
        }

    async def _handle(self, request: Request, handler: Handler) -> Response:
        response = await super()._handle(request, handler)
        response.headers["X-Correlation-Id"] = request.headers.get(
            "x-correlation-id", str(uuid.uuid4())
        )
        return response

    # -- state -------------------------------------------------------------------------

    def _check(self, request: Request) -> None:
        if self.token is not None and (
            request.headers.get("authorization") != f"Bearer {self.token}"
        ):
            raise HttpError(401, {"message": "Unauthorized access"})
        params = request.path_params
        team = params.get("team_id")
        if params.get("project_id") != self.project_id or (
            team is not None and team != self.team_id
        ):
            raise HttpError(403, {"message": "Access denied to project"})

    def _thread(self, thread_id: str) -> _Thread:
        thread = self._threads.get(thread_id)
        if thread is None:
            raise HttpError(404, {"message": "Thread not found"})
        return thread

    def _add_message(
        self,
        thread: _Thread,
        role: str,
        content: str,
        run_id: str | None,
        wall: float | None = None,
    ) -> dict[str, Any]:
        metadata = json.dumps({"runId": run_id}) if run_id and self.message_run_ids else None
        message = {
            "messageId": new_id("msg"),
            "content": content,
            "role": role,
            "createdAt": iso(self.wall_clock() if wall is None else wall),
            "userId": "user_emulator" if role == "user" else None,
            "metadata": metadata,
        }
        thread.messages.append(message)
        return message

    def _advance(self, thread: _Thread, run: _Run) -> None:
        data = run.data
        if data["status"] in _TERMINAL:
            return
        elapsed = self.clock() - run.t0
        queue = float(run.script.get("queue_seconds", self.queue_seconds))
        seconds = float(run.script.get("seconds", self.run_seconds))
        if elapsed >= queue and data["status"] == "queued":
            data["status"] = "in_progress"
            data["startedAt"] = iso(run.wall0 + queue)
        outcome = run.script.get("outcome", self.outcome)
        if elapsed < queue + seconds or outcome == "never":
            return
        end = run.wall0 + queue + seconds
        data["status"] = outcome
        data["completedAt"] = iso(end)
        if outcome == "completed":
            reply = str(run.script.get("reply", f"echo: {run.message}"))
            self._add_message(thread, "assistant", reply, data["runId"], end)
        elif outcome == "failed":
            data["errorMessage"] = str(
                run.script.get("error", "The emulator was scripted to fail this run.")
            )
        else:
            data["errorMessage"] = "The run expired before completion."

    def _public(self, run: _Run, *, created: bool) -> dict[str, Any]:
        data = copy.deepcopy(run.data)
        if not created:  # the service answers these only on create
            data["instructions"] = None
            data["userMessage"] = None
        return data

    # -- handlers ----------------------------------------------------------------------

    async def _create_run(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        self._check(request)
        message, instructions = _validate_run_request(body)
        try:
            match = _SCRIPT_LINE.search(instructions or "")
            script = parse_script(match.group(1) if match else None, _SCRIPT_KEYS)
            if script.get("outcome", self.outcome) not in OUTCOMES:
                raise ValueError(f"outcome must be one of {OUTCOMES}")
        except ValueError as exc:
            raise HttpError(400, _problem({"Instructions": [f"emulator script: {exc}"]})) from None
        with self._lock:
            thread = self._thread(request.path_params["thread_id"])
            for other in thread.runs:
                self._advance(thread, other)
                if other.data["status"] not in _TERMINAL:
                    raise HttpError(500, {
                        "message": "Failed to create thread run",
                        "details": f"Thread {thread.thread_id} already has an active run "
                                   f"{other.data['runId']}.",
                    })  # fmt: skip
            wall = self.wall_clock()
            run_id = new_id("run")
            run = _Run(
                data={
                    "runId": run_id,
                    "threadId": thread.thread_id,
                    "status": "queued",
                    "createdAt": iso(wall),
                    "startedAt": None,
                    "completedAt": None,
                    "assistantId": self.assistant_id,
                    "projectId": self.project_id,
                    "instructions": instructions,
                    "errorMessage": None,
                    "userMessage": message,
                },
                t0=self.clock(),
                wall0=wall,
                script=script,
                message=message,
            )
            self._add_message(thread, "user", message, run_id, wall)
            thread.runs.append(run)
            self._advance(thread, run)
            return self.json(record, self._public(run, created=True), 201)

    async def _get_run(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        self._check(request)
        with self._lock:
            thread = self._thread(request.path_params["thread_id"])
            for run in thread.runs:
                if run.data["runId"] == request.path_params["run_id"]:
                    self._advance(thread, run)
                    return self.json(record, self._public(run, created=False))
        raise HttpError(404, {"message": "Run not found"})

    def _info(self, thread: _Thread) -> dict[str, Any]:
        for run in thread.runs:
            self._advance(thread, run)
        messages = thread.messages
        first_user = next((m["content"] for m in messages if m["role"] == "user"), None)
        return {
            "threadId": thread.thread_id,
            "createdAt": iso(thread.created),
            "lastActivityAt": messages[-1]["createdAt"] if messages else None,
            "messageCount": len(messages),
            "firstMessage": first_user,
            "lastMessage": messages[-1]["content"] if messages else None,
            "isActive": True,
            "projectId": thread.project_id,
        }

    async def _get_thread(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        self._check(request)
        with self._lock:
            thread = self._thread(request.path_params["thread_id"])
            info = self._info(thread)
            detail = {"thread": info, "messages": copy.deepcopy(thread.messages),
                      "projectId": thread.project_id}  # fmt: skip
            return self.json(record, detail)

    async def _list_threads(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        self._check(request)
        query = request.query_params
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            raise HttpError(
                400, _problem({"limit": [f"The value '{query['limit']}' is not valid."]})
            ) from None
        if not 1 <= limit <= 100:
            raise HttpError(400, _problem({"limit": ["Limit must be between 1 and 100."]}))
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise HttpError(400, _problem({"order": ["Order must be 'asc' or 'desc'."]}))
        with self._lock:
            threads = list(self._threads.values())
            if order == "desc":
                threads.reverse()
            ids = [t.thread_id for t in threads]
            after, before = query.get("after"), query.get("before")
            if after is not None:
                threads = threads[ids.index(after) + 1 :] if after in ids else []
            elif before is not None:
                threads = threads[: ids.index(before)] if before in ids else []
            page = threads[-limit:] if before is not None and after is None else threads[:limit]
            more = len(threads) > limit
            infos = [self._info(t) for t in page]
        return self.json(record, {
            "threads": infos,
            "projectId": self.project_id,
            "hasMore": more,
            "limit": limit,
            "nextCursor": infos[-1]["threadId"] if infos and more else None,
            "previousCursor": infos[0]["threadId"] if infos and (after or before) else None,
            "order": order,
        })  # fmt: skip

    async def _chat(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        self._check(request)
        if not isinstance(body, dict):
            raise HttpError(400, _problem({"request": ["The request field is required."]}))
        message = _string_field(body, "message", "Message", MESSAGE_MAX, required=True)
        unknown = set(body) - {"message", "threadId"}
        if unknown:
            raise HttpError(400, _unmapped(sorted(unknown)[0], "ChatRequest"))
        thread_id = body.get("threadId")
        with self._lock:
            if thread_id is None:
                thread_id = self.create_thread()
                new = True
            else:
                new = False
            thread = self._thread(str(thread_id))
            assert message is not None
            self._add_message(thread, "user", message, None)
            reply = f"echo: {message}"
            self._add_message(thread, "assistant", reply, None)
        return self.json(record, {
            "response": reply, "threadId": thread.thread_id, "generatedAt": iso(self.wall_clock()),
            "userMessage": message, "isNewThread": new, "projectId": self.project_id,
            "metadata": None,
        })  # fmt: skip


def _unmapped(name: str, model: str) -> dict[str, Any]:
    return _problem({f"$.{name}": [
        f"The JSON property '{name}' could not be mapped to any .NET member contained in type "
        f"'AgileMantis.Shared.Models.{model}'."
    ]})  # fmt: skip


def _string_field(
    body: dict[str, Any], key: str, title: str, maximum: int, *, required: bool
) -> str | None:
    """ASP.NET's model validation of one string field, as ProblemDetails errors."""
    value = body.get(key)
    if value is None or (required and value == ""):
        if required:
            raise HttpError(400, _problem({title: [f"The {title} field is required."]}))
        return None
    if not isinstance(value, str):
        raise HttpError(400, _problem({f"$.{key}": [
            f"The JSON value could not be converted to System.String. Path: $.{key}."
        ]}))  # fmt: skip
    if len(value) > maximum:
        text = (
            f"The field {title} must be a string with a minimum length of 1 and a maximum "
            f"length of {maximum}."
            if required
            else f"The field {title} must be a string with a maximum length of {maximum}."
        )
        raise HttpError(400, _problem({title: [text]}))
    return value


def _validate_run_request(body: Any) -> tuple[str, str | None]:
    """Validate a ``RunRequest`` body; return (message, instructions)."""
    if not isinstance(body, dict):
        raise HttpError(400, _problem({"request": ["The request field is required."]}))
    unknown = set(body) - {"message", "instructions"}
    if unknown:
        raise HttpError(400, _unmapped(sorted(unknown)[0], "RunRequest"))
    message = _string_field(body, "message", "Message", MESSAGE_MAX, required=True)
    instructions = _string_field(body, "instructions", "Instructions", INSTRUCTIONS_MAX,
                                 required=False)  # fmt: skip
    assert message is not None
    return message, instructions
