"""The LangGraph client's base: mapping, payloads, reads, lists, threads, stateless runs."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

from prefect_agent_runs.backends.base import (
    BaseRunsClient,
    Page,
    RunEvent,
    derived_thread_id,
    paged,
)
from prefect_agent_runs.backends.create import CREATE_ID_KEY, first_match
from prefect_agent_runs.backends.langgraph.stream import LangGraphResume, is_not_found
from prefect_agent_runs.backends.paging import OffsetPager
from prefect_agent_runs.backends.sse import read_events
from prefect_agent_runs.errors import (
    NotFound,
    RunFailed,
    ServerError,
    ValidationError,
)
from prefect_agent_runs.http import RetryMode
from prefect_agent_runs.models import (
    METADATA_BATCH_KEY,
    METADATA_ITEM_KEY,
    Run,
    RunRequest,
    RunStatus,
)
from prefect_agent_runs.responses import redact

__all__ = ["PASSTHROUGH_FIELDS", "STATUS_MAP", "LangGraphCore"]

logger = logging.getLogger("prefect_agent_runs.backends.langgraph")

STATUS_MAP: dict[str, RunStatus] = {
    "pending": RunStatus.QUEUED,
    "running": RunStatus.RUNNING,
    "success": RunStatus.COMPLETED,
    "error": RunStatus.FAILED,
    "interrupted": RunStatus.INTERRUPTED,
    "timeout": RunStatus.TIMED_OUT,
}
"""LangGraph's run statuses (DESIGN.md's table)."""

# Fields of a run-create payload that RunRequest.options may carry through unchanged.
PASSTHROUGH_FIELDS = frozenset(
    {
        "command",
        "stream_mode",
        "stream_subgraphs",
        "stream_resumable",
        "config",
        "context",
        "interrupt_before",
        "interrupt_after",
        "webhook",
        "checkpoint",
        "checkpoint_id",
        "multitask_strategy",
        "if_not_exists",
        "on_completion",
        "on_disconnect",
        "after_seconds",
        "durability",
        "feedback_keys",
        "langsmith_tracer",
    }
)
"""Run-create fields that ``RunRequest.options`` may pass through."""


class LangGraphCore(BaseRunsClient):
    """What :class:`~.client.LangGraphClient` does without waiting: mapping, payloads,
    reads, lists, threads and the stateless / one-request runs."""

    backend: ClassVar[str] = "langgraph"
    status_map: ClassVar[Mapping[str, RunStatus]] = STATUS_MAP

    # -- mapping ------------------------------------------------------------------------

    def to_run(self, raw: Any) -> Run:
        """Normalize a LangGraph run object."""
        if (
            not isinstance(raw, Mapping)
            or not isinstance(raw.get("run_id"), str)
            or not raw["run_id"]
        ):
            raise self._bad_shape("a run object", raw)
        status = self.normalize(raw.get("status"))
        return Run(
            id=str(raw["run_id"]),
            thread_id=raw.get("thread_id"),
            status=status,
            raw_status=raw.get("status"),
            backend=self.backend,
            assistant_id=raw.get("assistant_id"),
            created_at=raw.get("created_at"),
            completed_at=raw.get("updated_at") if status.is_terminal else None,
            metadata=dict(raw.get("metadata") or {}),
            raw=dict(raw),
        )

    def _bad_shape(self, expected: str, got: Any) -> ServerError:
        # the server's answer, not our input: a ServerError, redacted before it is cut
        # (servers and proxies echo request headers, the x-api-key among them: issue 13)
        snippet = redact(json.dumps(got, default=str), self.transport.secrets)[:200]
        return ServerError(
            f"{self.backend}: the server answered something that is not {expected}: {snippet}. "
            "Is base_url a LangGraph Agent Server?",
            status_code=200,
            backend=self.backend,
            body_snippet=snippet,
        )

    def _run_path(self, run_id: str, thread_id: str | None) -> str:
        tid = self.segment(thread_id, "thread_id (LangGraph runs live on a thread)")
        rid = self.segment(run_id, "run_id")
        return f"/threads/{tid}/runs/{rid}"

    # -- create -------------------------------------------------------------------------

    def run_payload(self, request: RunRequest, *, create_id: str | None = None) -> dict[str, Any]:
        """The JSON body that starts ``request`` (exposed for tests and dry runs)."""
        if request.instructions is not None:
            raise ValidationError(
                f"{self.backend}: RunRequest.instructions has no LangGraph equivalent; put them "
                "in input or in options['context'] / options['config'] (request key "
                f"{request.key!r})",
                backend=self.backend,
            )
        unknown = set(request.options) - PASSTHROUGH_FIELDS
        if unknown:
            raise ValidationError(
                f"{self.backend}: unknown run option(s) {sorted(unknown)} for request key "
                f"{request.key!r}; allowed: {sorted(PASSTHROUGH_FIELDS)}",
                backend=self.backend,
            )
        run_input: dict[str, Any] | None = (
            dict(request.input) if request.input is not None else None
        )
        if request.message is not None:
            run_input = run_input or {}
            messages = list(run_input.get("messages") or [])
            messages.append({"role": "user", "content": request.message})
            run_input["messages"] = messages
        metadata = dict(request.metadata)
        if create_id:
            metadata[CREATE_ID_KEY] = create_id
        payload: dict[str, Any] = {"assistant_id": request.assistant_id, "metadata": metadata}
        if run_input is not None:
            payload["input"] = run_input
        payload.update(request.options)
        return payload

    def thread_id_for(self, request: RunRequest) -> tuple[str, bool]:
        """The thread a request runs on, and whether we chose it (then it may not exist yet).

        A batch item (metadata with batch key and item key) gets a thread id derived from
        them, so a rerun of the batch finds it again.
        """
        if request.thread_id is not None:  # an empty id is refused, not a new thread
            return self._check_id(request.thread_id, "thread_id"), False
        batch = request.metadata.get(METADATA_BATCH_KEY)
        key = request.metadata.get(METADATA_ITEM_KEY)
        if batch is not None and key is not None:
            return derived_thread_id(str(batch), str(key)), True
        return str(uuid.uuid4()), True

    async def create_batch(self, requests: Sequence[RunRequest]) -> list[Run]:
        """Start stateless runs in one request (``POST /runs/batch``), each on a new thread.

        Not duplicate-safe across a timeout (the server offers no lookup for them): the
        request is sent once. ``on_completion`` defaults to ``"keep"`` so that results can
        be read afterwards; pass ``options={"on_completion": "delete"}`` to drop them.
        """
        payloads = []
        for request in requests:
            if request.thread_id:
                raise ValidationError(
                    f"{self.backend}: create_batch starts stateless runs; request key "
                    f"{request.key!r} names thread {request.thread_id}. Use create_runs.",
                    backend=self.backend,
                )
            payload = self.run_payload(request)
            payload.setdefault("on_completion", "keep")
            payloads.append(payload)
        body = await self.transport.request_json(
            "POST",
            "/runs/batch",
            action=f"create a batch of {len(payloads)} runs",
            mode=RetryMode.NEVER,
            json=payloads,
        )
        if not isinstance(body, list):
            raise self._bad_shape("a list of runs", body)
        return [self.to_run(item) for item in body]

    async def create_stateless_run(self, request: RunRequest) -> Run:
        """Start a run without a thread of ours (``POST /runs``); sent once."""
        payload = self.run_payload(request)
        body = await self.transport.request_json(
            "POST",
            "/runs",
            action=f"create stateless run of {request.assistant_id!r}",
            mode=RetryMode.NEVER,
            json=payload,
        )
        return self.to_run(body)

    async def wait(self, request: RunRequest, *, stateless: bool = False) -> dict[str, Any]:
        """Create a run and wait for its final values in one request (``.../runs/wait``).

        Args:
            request: What to run (on its thread, a new thread, or stateless).
            stateless: Use ``POST /runs/wait`` (no thread of ours).

        Returns:
            The thread's final state values.
        """
        payload = self.run_payload(request)
        if stateless:
            path = "/runs/wait"
        else:
            thread_id, chosen = self.thread_id_for(request)
            if chosen:
                payload.setdefault("if_not_exists", "create")
            path = f"/threads/{self.segment(thread_id, 'thread_id')}/runs/wait"
        body = await self.transport.request_json(
            "POST",
            path,
            action=f"create and wait for a run of {request.assistant_id!r}",
            mode=RetryMode.NEVER,
            json=payload,
            timeout=self.policy.timeout_seconds,
        )
        values = body if isinstance(body, dict) else {"value": body}
        if isinstance(values.get("__error__"), dict):
            err = values["__error__"]
            raise RunFailed(
                f"{self.backend}: run of {request.assistant_id!r} failed: "
                f"{err.get('error', '')}: {err.get('message', '')}",
                run=Run(
                    id="unknown", status=RunStatus.FAILED, raw_status="error", backend=self.backend
                ),
            )
        return values

    def stream(
        self,
        request: RunRequest,
        *,
        stream_mode: str | Sequence[str] = "values",
        stateless: bool = False,
    ) -> AsyncIterator[RunEvent]:
        """Create a run and stream its events (``.../runs/stream``); sent once."""
        payload = self.run_payload(request)
        payload["stream_mode"] = stream_mode
        if stateless:
            path = "/runs/stream"
        else:
            thread_id, chosen = self.thread_id_for(request)
            if chosen:
                payload.setdefault("if_not_exists", "create")
            path = f"/threads/{self.segment(thread_id, 'thread_id')}/runs/stream"
        return self._sse(
            "POST", path, action=f"stream a run of {request.assistant_id!r}", json_body=payload
        )

    # -- read ---------------------------------------------------------------------------

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        """Read one run.

        Raises:
            NotFound: No such thread or run (the message names both ids).
        """
        body = await self.transport.request_json(
            "GET",
            self._run_path(run_id, thread_id),
            action=f"get run {run_id} on thread {thread_id}",
        )
        return self.to_run(body)

    @paged
    async def list_runs(
        self,
        *,
        thread_id: str | None = None,
        limit: int = 10,
        offset: int = 0,
        status: str | RunStatus | None = None,
        select: Sequence[str] | None = None,
        **filters: Any,
    ) -> Page[Run]:
        """List a thread's runs, newest first; the page iterates over the following pages.

        Args:
            thread_id: The thread (required).
            limit: Runs per page.
            offset: Runs to skip.
            status: Only runs with this status (LangGraph's word, or a RunStatus).
            select: Only these fields of each run (``run_id`` and ``thread_id`` are always
                asked for so the runs can be normalized).
        """
        if filters:
            raise ValidationError(
                f"{self.backend}: unknown list_runs filter(s) {sorted(filters)}",
                backend=self.backend,
            )
        tid = self._check_id(thread_id, "thread_id (LangGraph runs are listed per thread)")
        path = f"/threads/{self.segment(tid, 'thread_id')}/runs"
        raw_status = _raw_status(status)
        fields = None
        if select:
            fields = sorted({*select, "run_id", "thread_id", "status"})

        async def fetch(at: int, size: int) -> list[Run]:
            params: dict[str, Any] = {"limit": size, "offset": at, "status": raw_status}
            if fields:
                params["select"] = fields
            body = await self.transport.request_json(
                "GET", path, action=f"list runs of thread {tid}", params=params
            )
            if not isinstance(body, list):
                raise self._bad_shape("a list of runs", body)
            return [self.to_run(item) for item in body]

        return await OffsetPager(fetch, limit=limit, offset=offset).first()

    async def _find_on_thread(self, thread_id: str, meta_key: str, value: str) -> Run | None:
        return await first_match(self.list_runs(thread_id=thread_id, limit=50), {meta_key: value})

    async def delete_run(self, run_id: str, *, thread_id: str | None = None) -> None:
        """Delete a run and its record (a running run is deleted too, answered 204)."""
        await self.transport.request(
            "DELETE",
            self._run_path(run_id, thread_id),
            action=f"delete run {run_id} on thread {thread_id}",
        )

    def _sse(
        self,
        method: str,
        path: str,
        *,
        action: str,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        last_event_id: str | None = None,
        max_reconnects: int = 0,
    ) -> AsyncIterator[RunEvent]:
        """Yield SSE events; on a dropped GET stream, resume without loss or repeat
        (:class:`~.stream.LangGraphResume` says how with LangGraph's ids)."""

        def check(event: RunEvent) -> None:
            if event.event == "error" and is_not_found(event.data):
                # the server answers an unknown run with 200 and an error event
                raise NotFound(
                    f"{self.backend}: {action} failed: {event.data.get('message')}",
                    status_code=404,
                    backend=self.backend,
                )

        return read_events(
            self.transport,
            method,
            path,
            action=action,
            json_body=json_body,
            params=params,
            resume=LangGraphResume(last_event_id),
            max_reconnects=max_reconnects,
            check=check,
            no_ids_hint="create the run with options={'stream_resumable': True}",
        )

    async def get_thread_state(self, thread_id: str) -> dict[str, Any]:
        """The thread's current state (``GET /threads/{id}/state``)."""
        tid = self._check_id(thread_id, "thread_id")
        body = await self.transport.request_json(
            "GET",
            f"/threads/{self.segment(tid, 'thread_id')}/state",
            action=f"get the state of thread {tid}",
        )
        if not isinstance(body, dict):
            raise self._bad_shape("a thread state", body)
        return body

    # -- threads ------------------------------------------------------------------------

    async def create_thread(
        self,
        *,
        thread_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        if_exists: Literal["raise", "do_nothing"] = "raise",
    ) -> dict[str, Any]:
        """Create a thread (``POST /threads``); with ``if_exists="do_nothing"`` it is idempotent."""
        payload: dict[str, Any] = {"metadata": dict(metadata or {}), "if_exists": if_exists}
        if thread_id:
            payload["thread_id"] = self._check_id(thread_id, "thread_id")
        mode = RetryMode.IDEMPOTENT if thread_id and if_exists == "do_nothing" else RetryMode.CREATE
        body = await self.transport.request_json(
            "POST", "/threads", action="create a thread", mode=mode, json=payload
        )
        if not isinstance(body, dict):
            raise self._bad_shape("a thread", body)
        return body

    @paged
    async def search_threads(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        select: Sequence[str] | None = None,
    ) -> Page[dict[str, Any]]:
        """Threads whose metadata contains ``metadata`` (``POST /threads/search``), paged.

        ``select`` asks for only these fields of each thread (e.g. ``["thread_id"]``).
        """

        async def fetch(at: int, size: int) -> list[dict[str, Any]]:
            payload: dict[str, Any] = {
                "metadata": dict(metadata or {}),
                "limit": size,
                "offset": at,
            }
            if status:
                payload["status"] = status
            if select:
                payload["select"] = list(select)
            body = await self.transport.request_json(
                "POST",
                "/threads/search",
                action="search threads",
                json=payload,
                mode=RetryMode.IDEMPOTENT,
            )
            if not isinstance(body, list):
                raise self._bad_shape("a list of threads", body)
            return body

        return await OffsetPager(fetch, limit=limit, offset=offset).first()


def _raw_status(status: str | RunStatus | None) -> str | None:
    """LangGraph's status word for a filter: a RunStatus is mapped back through STATUS_MAP."""
    if status is None or not isinstance(status, RunStatus):
        return status
    for raw, normalized in STATUS_MAP.items():
        if normalized is status:
            return raw
    raise ValidationError(
        f"langgraph: no LangGraph status means {status.value!r}; use one of {sorted(STATUS_MAP)}",
        backend="langgraph",
    )


def _last_ai_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for message in reversed(messages):
        if (
            message.get("type") in ("ai", "AIMessage", "AIMessageChunk")
            or message.get("role") == "assistant"
        ):
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [
                    p.get("text", "")
                    for p in content
                    if isinstance(p, dict) and p.get("type") == "text"
                ]
                return "".join(texts) or None
    return None
