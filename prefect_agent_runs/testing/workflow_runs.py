"""An in-memory emulator of the Linkage workflow-runs API (``/api/v1/runs`` and run events).

It answers as the Linkage SDK's OpenAPI document says (``testing/schemas/linkage-openapi.yaml``):
runs under ``/api/v1/runs``, an event log per run read with a polling cursor
(``cursor``, ``limit`` -> ``nextCursor``) or streamed over SSE (``Accept: text/event-stream``
or ``stream=true``; resumable from ``cursor`` or ``Last-Event-ID``), and events ingested with
``POST /api/v1/runs/{runId}/events``. Errors are ``{"error": {"message", "details"}}``.

Example:
    ```python
    import httpx
    from prefect_agent_runs.testing import WorkflowRunsEmulator

    with WorkflowRunsEmulator(run_seconds=0.05) as emu:
        run = httpx.post(f"{emu.base_url}/api/v1/runs", json={"workflowId": "wf"}).json()
    ```

A run follows ``run.created`` -> ``run.started`` -> ``node.completed`` x N -> ``run.completed``
(``data.output``) or ``run.failed`` (``data.error``). Its behaviour is scripted through the
create body's ``metadata.emulator``, a JSON string (or object) such as
``{"seconds": 2, "outcome": "failed", "events": 1200}``. Keys: ``seconds``, ``queue_seconds``,
``outcome`` (``completed``, ``failed``, ``never``, ``external``: only an ingested terminal
event ends the run), ``events`` (progress events), ``status`` (the status word shown while
running, e.g. an unknown one), ``output``, ``error``.

The document leaves statuses open; this emulator answers ``queued``, ``running`` (or the
scripted word), ``completed``, ``failed`` and ``cancelled`` (after an ingested
``run.cancelled``). The default output is ``{"text": "echo: <input.message>", "input": ...}``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
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

__all__ = ["OUTCOMES", "TERMINAL_EVENTS", "WorkflowRunsEmulator"]

OUTCOMES = ("completed", "failed", "never", "external")
"""Outcomes a run can be scripted to end with."""

TERMINAL_EVENTS = {"run.completed": "completed", "run.failed": "failed",
                   "run.cancelled": "cancelled"}  # fmt: skip
"""Event types that end a run, and the status each leaves."""

_SCRIPT_KEYS = frozenset(
    {"seconds", "queue_seconds", "outcome", "events", "status", "output", "error"}
)
_FAULT_MESSAGES = {
    400: "Invalid run payload",
    401: "Unauthorized",
    429: "Usage limit exceeded",
    503: "Service unavailable",
}


def _error(message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"message": message, "details": details}}


@dataclass
class _Run:
    data: dict[str, Any]
    input: Any
    script: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    planned: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)


class WorkflowRunsEmulator(EmulatorBase):
    """Emulates the Linkage workflow-runs API under ``/api/v1``.

    Args:
        run_seconds: How long a run stays ``running`` before its outcome.
        queue_seconds: How long a run stays ``queued`` first.
        outcome: The outcome of every run not scripted through its metadata.
        progress_events: ``node.completed`` events a run emits while running.
        api_key: If set, requests must carry ``x-client-secret: <key>``.
        client_id: If set (with ``api_key``), requests must carry ``x-client-id: <id>``.
        clock: Monotonic clock driving run lifecycles (e.g. a ``FakeClock``).
        wall_clock: Wall clock for timestamps.
        stream_poll_seconds: How often an open SSE stream looks for new events.
        host: Address to serve on.
        port: Port to serve on (default: a free one).
    """

    def __init__(
        self,
        *,
        run_seconds: float = 0.2,
        queue_seconds: float = 0.0,
        outcome: str = "completed",
        progress_events: int = 2,
        api_key: str | None = None,
        client_id: str | None = None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
        stream_poll_seconds: float = 0.01,
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
        self.progress_events = progress_events
        self.api_key = api_key
        self.client_id = client_id
        self.stream_poll_seconds = stream_poll_seconds
        self._runs: dict[str, _Run] = {}

    def reset(self) -> None:
        """Forget every run, recorded request, fault and stream drop."""
        with self._lock:
            self._runs.clear()
            super().reset()

    def runs(self) -> list[dict[str, Any]]:
        """Snapshot of all runs (oldest first), advanced to the current clock."""
        with self._lock:
            out = []
            for run in self._runs.values():
                self._advance(run)
                out.append(copy.deepcopy(run.data))
            return out

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """Snapshot of one run's event log, advanced to the current clock.

        Args:
            run_id: The run.
        """
        with self._lock:
            run = self._run(run_id)
            self._advance(run)
            return copy.deepcopy(run.events)

    # -- EmulatorBase ------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler]]:
        """The Linkage runs routes."""
        return [
            ("GET", "/api/v1/runs", self._list_runs),
            ("POST", "/api/v1/runs", self._create_run),
            ("GET", "/api/v1/runs/{run_id}", self._get_run),
            ("GET", "/api/v1/runs/{run_id}/events", self._get_events),
            ("POST", "/api/v1/runs/{run_id}/events", self._ingest_events),
        ]

    def fault_body(self, status: int, method: str, path: str) -> Any:
        """Linkage's ``{"error": {"message", "details"}}`` for an injected fault."""
        if status == 500:
            message = (
                "Failed to create run"
                if path.rstrip("/") == "/api/v1/runs"
                else ("Internal server error")
            )
        else:
            message = _FAULT_MESSAGES.get(status, f"HTTP {status}")
        return _error(message, {"injected": True})

    def not_found_body(self, path: str) -> Any:
        """Linkage's error body for an unknown path."""
        return _error("Not found", {"path": path})

    def bad_json_body(self, path: str) -> Any:
        """Linkage's 400 for a body that is not JSON."""
        if path.endswith("/events"):
            return _error("Invalid run events payload", {"issue": "body is not JSON"})
        return _error("Invalid run payload", {"issue": "body is not JSON"})

    # -- lifecycle ---------------------------------------------------------------------

    def _check_auth(self, request: Request) -> None:
        if self.api_key is None:
            return
        secret_ok = request.headers.get("x-client-secret") == self.api_key
        id_ok = self.client_id is None or request.headers.get("x-client-id") == self.client_id
        if not (secret_ok and id_ok):
            raise HttpError(401, _error("Unauthorized"))

    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise HttpError(404, _error("Run not found", {"runId": run_id}))
        return run

    def _append(self, run: _Run, type_: str, data: dict[str, Any], wall: float) -> dict[str, Any]:
        seq = len(run.events) + 1
        event = {
            "id": f"evt_{seq:07d}",
            "sequence": seq,
            "runId": run.data["runId"],
            "workflowId": run.data["workflowId"],
            "type": type_,
            "data": data,
            "createdAt": iso(wall),
        }
        run.events.append(event)
        run.data["lastEventId"] = event["id"]
        status = TERMINAL_EVENTS.get(type_)
        if status is not None and run.data["status"] not in TERMINAL_EVENTS.values():
            run.data["status"] = status
            run.data["finishedAt"] = iso(wall)
            run.planned.clear()
            for node, state in run.data["nodeStatuses"].items():
                if state == "running":
                    run.data["nodeStatuses"][node] = status
        elif type_ == "run.started":
            run.data["status"] = run.script.get("status", "running")
            run.data["startedAt"] = iso(wall)
        elif type_ == "node.completed":
            run.data["nodeStatuses"][str(data.get("node"))] = "completed"
        return event

    def _advance(self, run: _Run) -> None:
        now = self.clock()
        while run.planned and run.planned[0][0] <= now:
            at, type_, data = run.planned.pop(0)
            self._append(run, type_, data, run.data["_wall0"] + (at - run.data["_t0"]))

    def _next_event_at(self, run: _Run) -> float | None:
        return run.planned[0][0] if run.planned else None

    def _plan(self, run: _Run, t0: float) -> None:
        script = run.script
        queue = float(script.get("queue_seconds", self.queue_seconds))
        seconds = float(script.get("seconds", self.run_seconds))
        n = int(script.get("events", self.progress_events))
        outcome = script.get("outcome", self.outcome)
        start = t0 + queue
        plan: list[tuple[float, str, dict[str, Any]]] = [(start, "run.started", {})]
        for i in range(n):
            at = start + seconds * (i + 1) / (n + 1)
            plan.append((at, "node.completed", {"node": f"node_{i + 1}", "index": i + 1}))
        end = start + seconds
        if outcome == "completed":
            message = run.input.get("message") if isinstance(run.input, dict) else None
            output = script.get("output", {"text": f"echo: {message}", "input": run.input})
            plan.append((end, "run.completed", {"output": output}))
        elif outcome == "failed":
            error = script.get("error", "The emulator was scripted to fail this run.")
            plan.append((end, "run.failed", {"error": {"message": error}}))
        run.planned = plan

    # -- handlers ----------------------------------------------------------------------

    def _public(self, run: _Run) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in run.data.items() if not k.startswith("_")}

    async def _list_runs(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        self._check_auth(request)
        workflow_id = request.query_params.get("workflowId")
        if not workflow_id:
            raise HttpError(400, _error("workflowId is required", {"param": "workflowId"}))
        limit = _int(request.query_params.get("limit"), default=20, low=1, high=100)
        cursor = request.query_params.get("cursor")
        with self._lock:
            runs = [r for r in reversed(self._runs.values()) if r.data["workflowId"] == workflow_id]
            if cursor:
                ids = [r.data["runId"] for r in runs]
                runs = runs[ids.index(cursor) + 1 :] if cursor in ids else []
            for run in runs[:limit]:
                self._advance(run)
            page = [self._public(r) for r in runs[:limit]]
            more = len(runs) > limit
        next_cursor = page[-1]["runId"] if page and more else None
        return self.json(record, {"runs": page, "nextCursor": next_cursor, "hasMore": more})

    async def _create_run(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        self._check_auth(request)
        if not isinstance(body, dict):
            raise HttpError(400, _error("Invalid run payload", {"issue": "expected an object"}))
        workflow_id = body.get("workflowId")
        if not isinstance(workflow_id, str) or not workflow_id.strip():
            raise HttpError(
                400,
                _error("Invalid run payload", {"field": "workflowId", "issue": "required"}),
            )
        metadata = body.get("metadata", {})
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise HttpError(
                400,
                _error("Invalid run payload", {"field": "metadata", "issue": "expected object"}),
            )
        try:
            script = parse_script(metadata.get("emulator"), _SCRIPT_KEYS)
            if script.get("outcome", self.outcome) not in OUTCOMES:
                raise ValueError(f"outcome must be one of {OUTCOMES}")
        except ValueError as exc:
            raise HttpError(
                400,
                _error("Invalid run payload", {"field": "metadata.emulator", "issue": str(exc)}),
            ) from None
        with self._lock:
            t0 = self.clock()
            wall = self.wall_clock()
            run_id = new_id("run")
            run = _Run(
                data={
                    "runId": run_id,
                    "workflowId": workflow_id,
                    "status": "queued",
                    "nodeStatuses": {},
                    "startedAt": None,
                    "finishedAt": None,
                    "metadata": copy.deepcopy(metadata),
                    "lastEventId": None,
                    "_t0": t0,
                    "_wall0": wall,
                },
                input=copy.deepcopy(body.get("input")),
                script=script,
            )
            self._runs[run_id] = run
            self._append(run, "run.created", {"input": run.input}, wall)
            self._plan(run, t0)
            self._advance(run)
            return self.json(record, self._public(run))

    async def _get_run(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        self._check_auth(request)
        with self._lock:
            run = self._run(request.path_params["run_id"])
            self._advance(run)
            return self.json(record, self._public(run))

    def _start_index(self, run: _Run, cursor: str | None) -> int:
        if cursor is None or cursor == "":
            return 0
        for index, event in enumerate(run.events):
            if event["id"] == cursor:
                return index + 1
        raise HttpError(400, _error("Invalid cursor", {"cursor": cursor}))

    async def _get_events(self, request: Request, body: Any, record: RecordedRequest) -> Response:
        self._check_auth(request)
        run_id = request.path_params["run_id"]
        streaming = "text/event-stream" in request.headers.get("accept", "") or (
            request.query_params.get("stream", "").lower() in ("true", "1")
        )
        cursor = request.query_params.get("cursor")
        if streaming and cursor is None:
            cursor = request.headers.get("last-event-id")
        with self._lock:
            run = self._run(run_id)
            self._advance(run)
            start = self._start_index(run, cursor)
            if not streaming:
                limit = _int(request.query_params.get("limit"), default=100, low=1, high=1000)
                page = copy.deepcopy(run.events[start : start + limit])
                next_cursor = page[-1]["id"] if page else (cursor or None)
                more = len(run.events) > start + limit
                return self.json(record, {"events": page, "nextCursor": next_cursor,
                                          "hasMore": more})  # fmt: skip
        return self.sse(record, self._stream(run, start))

    async def _stream(self, run: _Run, start: int) -> AsyncIterator[tuple[str | None, str, Any]]:
        budget = self.take_stream_drop()
        index = start
        sent = 0
        while True:
            with self._lock:
                self._advance(run)
                pending = copy.deepcopy(run.events[index:])
                index = len(run.events)
                finished = run.data["status"] in TERMINAL_EVENTS.values()
            for event in pending:
                if budget is not None and sent >= budget:
                    return  # the connection drops
                yield event["id"], event["type"], event
                sent += 1
            if finished:
                return
            await asyncio.sleep(self.stream_poll_seconds)

    async def _ingest_events(
        self, request: Request, body: Any, record: RecordedRequest
    ) -> Response:
        self._check_auth(request)
        items = body.get("events") if isinstance(body, dict) and "events" in body else body
        if isinstance(items, dict):
            items = [items]
        with self._lock:
            run = self._run(request.path_params["run_id"])
            self._advance(run)
            events = _validate_events(items, run)
            wall = self.wall_clock()
            stored = [
                self._append(run, e["type"], copy.deepcopy(e.get("data") or {}), wall)
                for e in events
            ]
            return self.json(
                record,
                {"accepted": len(stored), "events": copy.deepcopy(stored),
                 "nextCursor": stored[-1]["id"]},
            )  # fmt: skip


def _validate_events(items: Any, run: _Run) -> list[dict[str, Any]]:
    """Raise Linkage's 400 for an ingest payload that is not a non-empty list of events."""
    if not isinstance(items, list) or not items:
        raise HttpError(
            400,
            _error("Invalid run events payload", {"issue": "expected an event or a list"}),
        )
    for index, event in enumerate(items):
        if not isinstance(event, dict):
            raise HttpError(
                400,
                _error("Invalid run events payload", {"index": index, "issue": "not an object"}),
            )
        type_ = event.get("type")
        if not isinstance(type_, str) or not type_.strip():
            raise HttpError(
                400,
                _error("Invalid run events payload",
                       {"index": index, "field": "type", "issue": "required string"}),
            )  # fmt: skip
        data = event.get("data")
        if data is not None and not isinstance(data, dict):
            raise HttpError(
                400,
                _error("Invalid run events payload",
                       {"index": index, "field": "data", "issue": "expected object"}),
            )  # fmt: skip
        for key in ("runId", "workflowId"):
            if key in event and event[key] != run.data[key]:
                raise HttpError(
                    400,
                    _error("Event runId/workflowId mismatch", {"index": index, "field": key}),
                )
    return items


def _int(raw: str | None, *, default: int, low: int, high: int) -> int:
    """A query integer, clamped (Linkage documents no error for a bad ``limit``)."""
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        value = default
    return max(low, min(high, value))
