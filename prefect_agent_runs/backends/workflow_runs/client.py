"""The Linkage-style workflow-runs client (seed 002): runs under ``/api/v1/runs`` with an event log.

* ``create_run``: ``POST /api/v1/runs`` with ``{workflowId, input, metadata}`` (the
  workflow is the request's ``assistant_id``), sent once and reconciled by listing the
  workflow's runs for the create id in their metadata (no idempotency key exists);
* ``get_run``, ``list_runs`` (``workflowId``, ``limit``, the server's ``nextCursor``);
* ``get_events`` (polling cursor: ``cursor``, ``limit`` -> ``nextCursor``),
  ``stream_events`` (SSE, resumed from the last event's cursor after a dropped connection,
  with no loss or repeat), ``ingest_events`` (one or many; a 400 is a ``BadRequest`` carrying
  the server's message and details);
* ``wait_for_run`` follows the event stream to a terminal event (``stream=True``, the
  default) or polls the run; ``get_result`` is the run's output and final events.

The document leaves statuses open: the words in :data:`STATUS_MAP` are mapped, any other is
``UNKNOWN`` (not terminal; warned once per word). There is no cancel endpoint:
``cancel_run`` raises ``NotSupported``, and a timed-out wait leaves the run going.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from prefect_agent_runs.backends.base import BaseRunsClient, Capability, Page, RunEvent, paged
from prefect_agent_runs.backends.create import CREATE_ID_KEY, first_match, new_create_id
from prefect_agent_runs.backends.paging import Chunk, CursorPager
from prefect_agent_runs.backends.sse import ResumePoint, read_events
from prefect_agent_runs.backends.steps import event_stream_step, poll_step
from prefect_agent_runs.errors import TransportError, ValidationError
from prefect_agent_runs.http import RetryPolicy, Transport
from prefect_agent_runs.models import (
    METADATA_BATCH_KEY,
    METADATA_ITEM_KEY,
    Run,
    RunRequest,
    ThreadResult,
)
from prefect_agent_runs.models import RunStatus as S
from prefect_agent_runs.transient import TRANSIENT_TOLERANCE
from prefect_agent_runs.waiting import Clock, Observation, PollPolicy, Sleep, wait_for_terminal

__all__ = [
    "DEFAULT_BASE_URL",
    "STATUS_MAP",
    "TERMINAL_EVENTS",
    "EventsChunk",
    "WorkflowRunsClient",
    "parse_linkage_error",
]

logger = logging.getLogger("prefect_agent_runs.backends.workflow_runs")

DEFAULT_BASE_URL = "http://localhost:3000"
"""Linkage's default ``serverURL``."""

STATUS_MAP: dict[str, S] = {
    "queued": S.QUEUED, "pending": S.QUEUED, "created": S.QUEUED,
    "running": S.RUNNING, "in_progress": S.RUNNING, "started": S.RUNNING,
    "completed": S.COMPLETED, "succeeded": S.COMPLETED, "success": S.COMPLETED,
    "failed": S.FAILED, "error": S.FAILED,
    "cancelled": S.CANCELLED, "canceled": S.CANCELLED,
    "timed_out": S.TIMED_OUT, "timeout": S.TIMED_OUT,
}  # fmt: skip
"""Server status word -> normalized status (the document leaves the words open)."""

TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.cancelled"})
"""Event types after which a run is terminal."""

_warned: set[str] = set()


def parse_linkage_error(body: Any) -> tuple[str | None, str | None, dict[str, list[str]]]:
    """Read Linkage's ``{"error": {"message", "details"}}``: the message, with its details.

    Args:
        body: The decoded JSON body.

    Returns:
        (message, code, field errors); a ``details.field`` becomes a field error.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        from prefect_agent_runs.responses import parse_error_body

        return parse_error_body(body)
    message = error.get("message") if isinstance(error.get("message"), str) else None
    details = error.get("details")
    fields: dict[str, list[str]] = {}
    if isinstance(details, dict):
        text = ", ".join(f"{k}: {v}" for k, v in details.items())
        if "field" in details:
            fields[str(details["field"])] = [str(details.get("issue", message))]
        message = f"{message} ({text})" if message and text else message
    elif details not in (None, ""):
        message = f"{message} ({details})" if message else str(details)
    return message, None, fields


@dataclass(frozen=True)
class EventsChunk:
    """One answer of ``GET /api/v1/runs/{runId}/events`` (polling).

    Attributes:
        events: The events, oldest first.
        next_cursor: Where the next poll starts (the last event's id; the given cursor
            when there was nothing new).
        has_more: Whether more events were already there.
    """

    events: list[dict[str, Any]]
    next_cursor: str | None
    has_more: bool


class _CursorResume(ResumePoint):
    """Resume a Linkage event stream after its last event: ``cursor`` and ``Last-Event-ID``."""

    def params(self) -> dict[str, Any]:
        return {"stream": "true", **({"cursor": self.last} if self.last else {})}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class WorkflowRunsClient(BaseRunsClient):
    """Async client of a Linkage-style workflow-runs API.

    Args:
        base_url: The API root (Linkage's ``serverURL``).
        api_key: The client secret, sent as ``x-client-secret``.
        client_id: The client id, sent as ``x-client-id``.
        stream: Wait by following the event stream (SSE); False: poll the run.
        request_timeout_seconds: Timeout of one HTTP request.
        max_retries: Transport retries of idempotent requests.
        max_concurrency: Requests in flight at once.
        policy: Default wait policy.
        http_client: An ``httpx.AsyncClient`` to use (tests).
        clock: Monotonic clock for deadlines (tests).
        sleep: Sleep between observations and retries (tests).
        verify_tls: Verify the server's TLS certificate (default); off logs a warning.
        **extra: Other credentials fields (ignored).

    Example:
        ```python
        async with WorkflowRunsClient("http://localhost:3000") as client:
            run = await client.create_run(RunRequest(assistant_id="wf_1", message="hi"))
            run = await client.wait_for_run(run)
            result = await client.get_result(run)
        ```
    """

    backend: ClassVar[str] = "workflow_runs"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {Capability.LIST_RUNS, Capability.STREAM_EVENTS, Capability.INGEST_EVENTS,
         Capability.FIND_BY_KEY}
    )  # fmt: skip
    status_map: ClassVar[Mapping[str, S]] = STATUS_MAP
    error_parser = staticmethod(parse_linkage_error)  # type: ignore[assignment]

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        client_id: str | None = None,
        stream: bool = True,
        request_timeout_seconds: float = 30.0,
        max_retries: int = TRANSIENT_TOLERANCE,
        max_concurrency: int = 32,
        retry_policy: RetryPolicy | None = None,
        policy: PollPolicy | None = None,
        http_client: Any = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        verify_tls: bool = True,
        **extra: Any,
    ) -> None:
        headers = {}
        if client_id:
            headers["x-client-id"] = client_id
        if api_key:
            headers["x-client-secret"] = api_key
        super().__init__(
            Transport(
                backend=self.backend,
                base_url=base_url,
                headers=headers,
                secrets=[api_key or ""],
                request_timeout_seconds=request_timeout_seconds,
                max_retries=max_retries,
                max_concurrency=max_concurrency,
                retry_policy=retry_policy,
                sleep=sleep,
                http_client=http_client,
                verify_tls=verify_tls,
                error_parser=parse_linkage_error,
            ),
            policy=policy,
            clock=clock,
            sleep=sleep,
        )
        self.stream = stream

    # -- runs ---------------------------------------------------------------------------

    @classmethod
    def normalize(cls, raw_status: str | None) -> S:
        """The normalized status; an unknown word is UNKNOWN, warned once per word."""
        status = super().normalize(raw_status)
        if status is S.UNKNOWN and raw_status and raw_status not in _warned:
            _warned.add(raw_status)
            logger.warning(
                "workflow_runs: unknown run status %r: kept as UNKNOWN (not terminal)", raw_status
            )
        return status

    def to_run(self, raw: Any) -> Run:
        """A :class:`Run` from Linkage's run object."""
        if not isinstance(raw, dict) or not raw.get("runId"):
            raise self.bad_shape("a run object", raw)
        raw_status = raw.get("status") if isinstance(raw.get("status"), str) else None
        error = raw.get("error")
        return Run(
            id=str(raw["runId"]),
            thread_id=None,
            status=self.normalize(raw_status),
            raw_status=raw_status,
            backend=self.backend,
            assistant_id=str(raw["workflowId"]) if raw.get("workflowId") else None,
            started_at=_parse_time(raw.get("startedAt")),
            completed_at=_parse_time(raw.get("finishedAt")),
            metadata=dict(raw["metadata"]) if isinstance(raw.get("metadata"), dict) else {},
            error=(error.get("message") if isinstance(error, dict) else error) or None,
            raw=raw,
        )

    def _payload(self, request: RunRequest, create_id: str) -> dict[str, Any]:
        if request.thread_id:
            raise ValidationError(
                "workflow_runs: workflow runs have no threads; leave thread_id empty "
                f"(got {request.thread_id!r})",
                backend=self.backend,
            )
        self._check_id(request.assistant_id, "assistant_id (the workflowId)")
        data: dict[str, Any] = dict(request.input or {})
        if request.message is not None:
            data.setdefault("message", request.message)
        if request.instructions is not None:
            data.setdefault("instructions", request.instructions)
        metadata = {**self.batch_metadata(request), CREATE_ID_KEY: create_id}
        return {"workflowId": request.assistant_id, "input": data, "metadata": metadata,
                **request.options}  # fmt: skip

    async def create_run(self, request: RunRequest) -> Run:
        """Start a run of the workflow ``request.assistant_id``; never duplicated.

        Args:
            request: ``input`` (and ``message``/``instructions``, added to it) is the run's
                input; ``options`` are added to the body.
        """
        create_id = new_create_id()
        payload = self._payload(request, create_id)

        async def lookup() -> Run | None:
            runs = self.list_runs(workflow_id=request.assistant_id, limit=50)
            return await first_match(runs, {CREATE_ID_KEY: create_id}, limit=200)

        return await self.create_reconciled_run(
            "/api/v1/runs",
            payload,
            action=self.create_action(request, None).replace("assistant", "workflow"),
            lookup=lookup,
        )

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        """Read one run."""
        path = f"/api/v1/runs/{self.segment(run_id, 'run_id')}"
        body = await self.transport.request_json("GET", path, action=f"get run {run_id}")
        return self.to_run(body)

    @paged
    async def list_runs(
        self,
        *,
        thread_id: str | None = None,
        limit: int = 20,
        workflow_id: str | None = None,
        **filters: Any,
    ) -> Page[Run]:
        """The recent runs of a workflow, newest first (the server's paging).

        Args:
            thread_id: Not used (workflow runs have no threads).
            limit: Runs per page.
            workflow_id: The workflow (required by the server; also ``workflowId=``).
            **filters: ``workflowId``, or other query parameters sent as given.

        Raises:
            ValidationError: No workflow named (before any request).
        """
        workflow = workflow_id or filters.pop("workflowId", None)
        if not workflow:
            raise ValidationError(
                "workflow_runs: list_runs needs workflow_id (the server requires workflowId)",
                backend=self.backend,
            )

        async def fetch(cursor: str | None) -> Chunk[Run]:
            params = {"workflowId": workflow, "limit": str(limit), **filters}
            if cursor:
                params["cursor"] = cursor
            body = await self.transport.request_json(
                "GET", "/api/v1/runs", action=f"list runs of workflow {workflow!r}", params=params
            )
            raws = body.get("runs") if isinstance(body, dict) else None
            runs = [self.to_run(r) for r in raws or []]
            nxt = body.get("nextCursor") if isinstance(body, dict) else None
            if isinstance(body, dict) and body.get("hasMore") is False:
                nxt = None
            return Chunk(runs, str(nxt) if nxt else None)

        return await CursorPager(fetch, item_id=lambda r: r.id, description="workflow runs").first()

    async def find_run(self, request: RunRequest) -> Run | None:
        """The run already started for this batch item (its batch tags in the metadata)."""
        key = request.metadata.get(METADATA_ITEM_KEY)
        batch = request.metadata.get(METADATA_BATCH_KEY)
        if key is None or batch is None:
            return None
        runs = self.list_runs(workflow_id=request.assistant_id, limit=100)
        return await first_match(
            runs, {METADATA_ITEM_KEY: str(key), METADATA_BATCH_KEY: str(batch)}
        )

    async def cancel_run(
        self, run_id: str, *, thread_id: str | None = None, wait: bool = False
    ) -> Run:
        """Always raises: the workflow-runs API has no cancel endpoint."""
        raise self._unsupported(
            "cancel_run",
            f"The workflow-runs API has no cancel endpoint; run {run_id} goes on until the "
            "workflow ends it.",
        )

    # -- events -------------------------------------------------------------------------

    async def get_events_chunk(
        self, run_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> EventsChunk:
        """One poll of a run's events after ``cursor``.

        Args:
            run_id: The run.
            cursor: The last event already seen (None: from the start).
            limit: Events at most.
        """
        path = f"/api/v1/runs/{self.segment(run_id, 'run_id')}/events"
        params: dict[str, Any] = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        body = await self.transport.request_json(
            "GET", path, action=f"get events of run {run_id}", params=params
        )
        events = body.get("events") if isinstance(body, dict) else None
        events = [e for e in events or [] if isinstance(e, dict)]
        nxt = body.get("nextCursor") if isinstance(body, dict) else None
        more = body.get("hasMore") if isinstance(body, dict) else None
        has_more = bool(more) if isinstance(more, bool) else len(events) >= limit
        return EventsChunk(events, str(nxt) if nxt else cursor, has_more)

    @paged
    async def get_events(
        self, run_id: str, *, cursor: str | None = None, limit: int = 100
    ) -> Page[dict[str, Any]]:
        """A run's events after ``cursor``, page by page (await, or iterate every event).

        Args:
            run_id: The run.
            cursor: Start after this event (None: from the start).
            limit: Events per page.
        """

        async def fetch(at: str | None) -> Chunk[dict[str, Any]]:
            chunk = await self.get_events_chunk(run_id, cursor=at, limit=limit)
            return Chunk(chunk.events, chunk.next_cursor if chunk.has_more else None)

        return await CursorPager(
            fetch, item_id=lambda e: str(e.get("id")), cursor=cursor, description="run events"
        ).first()

    async def stream_events(
        self, run: Run | str, *, cursor: str | None = None, max_reconnects: int = 5, **options: Any
    ) -> AsyncIterator[RunEvent]:
        """Follow a run's events over SSE until a terminal event.

        A dropped connection (an error, or the server closing the stream before the run
        ended) is resumed from the last event received, so no event is lost or repeated.

        Args:
            run: The run (or its id).
            cursor: Start after this event (None: from the start).
            max_reconnects: Reconnections in a row without a new event before giving up.
            **options: Ignored (other backends' options).

        Raises:
            TransportError: The stream kept dropping without progress.
        """
        run_id = run.id if isinstance(run, Run) else run
        path = f"/api/v1/runs/{self.segment(run_id, 'run_id')}/events"
        point = _CursorResume(cursor)
        idle = 0
        while True:
            before = point.yielded
            async for event in read_events(
                self.transport, "GET", path, action=f"stream events of run {run_id}",
                resume=point, max_reconnects=max_reconnects,
            ):  # fmt: skip
                yield event
                if event.event in TERMINAL_EVENTS:
                    return
            idle = 0 if point.yielded > before else idle + 1
            if (await self.get_run(run_id)).status.is_terminal and idle:
                return  # ended, and nothing more will come
            if idle > max_reconnects:
                raise TransportError(
                    f"workflow_runs: the event stream of run {run_id} closed {idle} times in a "
                    f"row without a new event (after {point.last})",
                    backend=self.backend,
                )
            logger.info("workflow_runs: stream of run %s closed early; resuming after %s",
                        run_id, point.last)  # fmt: skip

    async def ingest_events(
        self, run_id: str, events: Sequence[Mapping[str, Any]] | Mapping[str, Any]
    ) -> Any:
        """Append one event or many to a run's log.

        Args:
            run_id: The run.
            events: One event (``{"type", "data"}``) or a list of them.

        Returns:
            The server's answer (``{accepted, events, nextCursor}``).

        Raises:
            BadRequest: The server refused them (its message and details say why).
        """
        path = f"/api/v1/runs/{self.segment(run_id, 'run_id')}/events"
        body: Any = dict(events) if isinstance(events, Mapping) else [dict(e) for e in events]
        count = 1 if isinstance(events, Mapping) else len(body)
        return await self.transport.request_json(
            "POST", path, action=f"ingest {count} event(s) into run {run_id}", json=body
        )

    # -- waiting and results ------------------------------------------------------------

    async def wait_for_run(
        self,
        run: Run | str,
        *,
        thread_id: str | None = None,
        timeout_seconds: float | None = None,
        cancel_on_timeout: bool | None = None,
        policy: PollPolicy | None = None,
        on_change: Callable[[Run], Any] | None = None,
        tool_handler: Any = None,
    ) -> Run:
        """Wait until the run is terminal: follow its event stream, or poll it.

        There is no cancel endpoint, so a wait that times out leaves the run going
        (``cancel_on_timeout`` cannot apply; the timeout error says so).
        """
        current = run if isinstance(run, Run) else await self.get_run(run)
        wait_policy = self._policy(policy, timeout_seconds, False)

        async def read() -> Run:
            return await self.get_run(current.id)

        async def observe() -> Observation:
            return Observation(await read())

        if self.stream:
            last: dict[str, str | None] = {"cursor": None}

            async def events() -> AsyncIterator[RunEvent]:
                async for event in self.stream_events(current, cursor=last["cursor"]):
                    last["cursor"] = event.id or last["cursor"]
                    yield event

            step = event_stream_step(events, read, is_final=lambda e: e.event in TERMINAL_EVENTS)  # type: ignore[arg-type]
        else:
            step = poll_step(observe)
        kwargs: dict[str, Any] = {}
        if self._clock is not None:
            kwargs["clock"] = self._clock
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        return await wait_for_terminal(step, current, wait_policy, cancel=None,
                                       on_change=on_change, **kwargs)  # fmt: skip

    async def get_result(self, run: Run) -> ThreadResult:
        """The run's output (from its terminal event) and its final events.

        ``values`` holds ``output`` and ``events`` (the last 20); ``text`` is the output when
        it is a string, or its ``text`` field.
        """
        events = await self.get_events(run.id, limit=500).get_all()
        output: Any = None
        for event in reversed(events):
            data = event.get("data")
            if event.get("type") in TERMINAL_EVENTS and isinstance(data, dict):
                output = data.get("output", data.get("error"))
                break
        text = output if isinstance(output, str) else None
        if isinstance(output, dict) and isinstance(output.get("text"), str):
            text = output["text"]
        return ThreadResult(
            thread_id=None,
            run_id=run.id,
            values={"output": output, "events": events[-20:]},
            text=text,
            source="events",
        )
