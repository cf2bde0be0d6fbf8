"""LangGraph Platform / Agent Server runs (seeds 001 and 004).

Waiting uses the server's push: ``GET .../join`` long-polls until the run ends (and
returns the thread's values); ``GET .../stream`` (join_stream) streams its events over
SSE and resumes after a dropped connection with ``Last-Event-ID``.

Creates are duplicate-safe: every run gets a thread id chosen by us (uuid5 of
``(batch_key, key)`` for a batch item, else a uuid4) sent with ``if_not_exists:
"create"``, and a one-off ``prefect_agent_runs_create_id`` in its metadata; after a
timeout or a 5xx the thread's runs are listed and the run adopted before anything is sent
again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import httpx

from prefect_agent_runs.backends.base import (
    BaseRunsClient,
    Capability,
    Page,
    RunEvent,
    ToolHandler,
    derived_thread_id,
    paged,
)
from prefect_agent_runs.backends.create import CREATE_ID_KEY, first_match, new_create_id
from prefect_agent_runs.backends.langgraph.stream import LangGraphResume, is_not_found
from prefect_agent_runs.backends.paging import OffsetPager
from prefect_agent_runs.backends.sse import read_events
from prefect_agent_runs.backends.steps import join_step
from prefect_agent_runs.errors import (
    AgentRunsError,
    NotFound,
    RunError,
    RunFailed,
    ValidationError,
)
from prefect_agent_runs.http import RetryMode, Transport
from prefect_agent_runs.models import (
    METADATA_BATCH_KEY,
    METADATA_ITEM_KEY,
    Run,
    RunRequest,
    RunStatus,
    ThreadResult,
)
from prefect_agent_runs.waiting import Clock, PollPolicy, Sleep

__all__ = ["STATUS_MAP", "LangGraphClient"]

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

CancelAction = Literal["interrupt", "rollback"]
JOIN_CHUNK_SECONDS = 300.0
"""Longest single join request; a longer wait re-joins (a proxy may cut idle requests)."""
JOIN_VALUES_KEPT = 4096
"""Join answers kept for ``get_result`` (the oldest are dropped; a dropped one costs a
``GET /threads/{id}/state`` if its result is asked for)."""
SEARCH_PAGE = 1000
"""Threads per page of a batch's bulk lookup (``POST /threads/search``)."""
CONFIRM_WINDOW_SECONDS = 0.1
"""How long a finished join waits for others to share one status check."""
CONFIRM_MAX_THREADS = 256
"""Threads checked by one status check at most."""


class _StatusCheck:
    """Checks in bulk which threads are ``interrupted`` after their joins answered values.

    A join answers the same values for a run that succeeded and for one cancelled from
    elsewhere in mid-run. The thread's status tells them apart, and one ``POST
    /threads/search {ids, status: "interrupted"}`` answers for every run that finished
    within ``CONFIRM_WINDOW_SECONDS`` (usually with an empty list).
    """

    def __init__(self, client: LangGraphClient) -> None:
        self.client = client
        self.pending: dict[str, list[asyncio.Future[bool]]] = {}
        self.flusher: asyncio.Task[None] | None = None
        self.full = asyncio.Event()

    async def interrupted(self, thread_id: str) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.setdefault(thread_id.lower(), []).append(future)
        if len(self.pending) >= CONFIRM_MAX_THREADS:
            self.full.set()
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            await asyncio.wait_for(self.full.wait(), CONFIRM_WINDOW_SECONDS)
        except asyncio.TimeoutError:
            pass
        batch, self.pending, self.flusher = self.pending, {}, None
        self.full.clear()
        try:
            body = await self.client.transport.request_json(
                "POST",
                "/threads/search",
                action=f"check the status of {len(batch)} finished thread(s)",
                json={
                    "ids": list(batch),
                    "status": "interrupted",
                    "select": ["thread_id"],
                    "limit": len(batch),
                },
                mode=RetryMode.IDEMPOTENT,
            )
            if not isinstance(body, list):
                raise self.client._bad_shape("a list of threads", body)
            stopped = {str(t.get("thread_id", "")).lower() for t in body if isinstance(t, dict)}
        except BaseException as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for thread_id, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(thread_id in stopped)


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


class LangGraphClient(BaseRunsClient):
    """Async client for the runs API of a LangGraph Agent Server.

    Args:
        base_url: The server's root URL (the SDK's ``url``).
        api_key: Sent as ``x-api-key`` (LangSmith / LangGraph Platform deployments).
        headers: Extra headers on every request.
        request_timeout_seconds: Timeout of one HTTP request (a join may take longer:
            it is given the wait's remaining time).
        max_retries: Transport retries.
        max_concurrency: Requests in flight.
        policy: Default wait policy.
        http_client: An ``httpx.AsyncClient`` to use (tests).
        clock: Monotonic clock (tests).
        sleep: Sleep (tests).

    Examples:
        ```python
        async with LangGraphClient("http://127.0.0.1:8123") as client:
            run = await client.create_run(RunRequest(assistant_id="agent", message="hi"))
            run = await client.wait_for_run(run, timeout_seconds=600)
            print((await client.get_result(run)).text)
        ```
    """

    backend: ClassVar[str] = "langgraph"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            Capability.DELETE,
            Capability.STREAM_EVENTS,
            Capability.JOIN,
            Capability.NATIVE_BATCH,
            Capability.FIND_BY_KEY,
            Capability.FIND_BATCH_RUNS,
            Capability.CANCEL,
            Capability.LIST_RUNS,
        }
    )
    status_map: ClassVar[Mapping[str, RunStatus]] = STATUS_MAP

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        max_retries: int = 3,
        max_concurrency: int = 32,
        policy: PollPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        all_headers = dict(headers or {})
        if api_key:
            all_headers["x-api-key"] = api_key
        transport = Transport(
            backend=self.backend,
            base_url=base_url,
            headers=all_headers,
            secrets=[api_key] if api_key else [],
            request_timeout_seconds=request_timeout_seconds,
            max_retries=max_retries,
            max_concurrency=max_concurrency,
            http_client=http_client,
            sleep=sleep,
        )
        super().__init__(transport, policy=policy, clock=clock, sleep=sleep)
        # run id -> the join's answer (the thread's values), for get_result without a request
        self._join_values: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # batch key -> the threads that exist for it (one bulk search per batch), and the
        # threads this client has sent a create for (the bulk answer may predate them)
        self._batch_threads: dict[str, frozenset[str]] = {}
        self._batch_locks: dict[str, asyncio.Lock] = {}
        self._touched: set[str] = set()
        self._status_check: _StatusCheck | None = None

    # -- mapping ------------------------------------------------------------------------

    def to_run(self, raw: Any) -> Run:
        """Normalize a LangGraph run object."""
        if not isinstance(raw, Mapping) or "run_id" not in raw:
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

    def _bad_shape(self, expected: str, got: Any) -> RunError | ValidationError:
        snippet = json.dumps(got, default=str)[:200]
        return ValidationError(
            f"{self.backend}: the server answered something that is not {expected}: {snippet}. "
            "Is base_url a LangGraph Agent Server?",
            backend=self.backend,
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
        if request.thread_id:
            return self._check_id(request.thread_id, "thread_id"), False
        batch = request.metadata.get(METADATA_BATCH_KEY)
        key = request.metadata.get(METADATA_ITEM_KEY)
        if batch is not None and key is not None:
            return derived_thread_id(str(batch), str(key)), True
        return str(uuid.uuid4()), True

    async def create_run(self, request: RunRequest) -> Run:
        """Start a run on the request's thread, or on a new thread of our choosing.

        Duplicate-safe: after a timeout or a 5xx the thread's runs are searched for this
        create's id before the request is sent again.

        Raises:
            BadRequest: The server refused the payload (an unknown assistant, bad input).
            NotFound: The thread does not exist (when the request names one).
        """
        thread_id, chosen = self.thread_id_for(request)
        create_id = new_create_id()
        payload = self.run_payload(request, create_id=create_id)
        if chosen:
            payload.setdefault("if_not_exists", "create")
        self._touched.add(thread_id)

        async def lookup() -> Run | None:
            return await self._find_on_thread(thread_id, CREATE_ID_KEY, create_id)

        return await self.create_reconciled_run(
            f"/threads/{self.segment(thread_id, 'thread_id')}/runs",
            payload,
            action=self.create_action(request, thread_id),
            lookup=lookup,
        )

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

    async def find_run(self, request: RunRequest) -> Run | None:
        """The newest run already started for this batch item, or None.

        Looks on the thread derived from (batch_key, key); requests without both return None.
        The first lookup of a batch asks for all its threads at once (``POST
        /threads/search`` by the batch metadata, paged); after that only an item whose
        thread exists costs a request (the list of its runs). A thread this client has sent
        a create for is always looked up on the server.
        """
        key = request.metadata.get(METADATA_ITEM_KEY)
        batch = request.metadata.get(METADATA_BATCH_KEY)
        if key is None or batch is None:
            return None
        thread_id, _ = self.thread_id_for(request)
        if thread_id not in self._touched:
            existing = await self._threads_of_batch(str(batch))
            if thread_id not in existing:
                return None
        return await self._find_on_thread(thread_id, METADATA_ITEM_KEY, str(key))

    async def _threads_of_batch(self, batch_key: str) -> frozenset[str]:
        """The ids of every thread tagged with ``batch_key``: one paged search per batch."""
        known = self._batch_threads.get(batch_key)
        if known is not None:
            return known
        lock = self._batch_locks.setdefault(batch_key, asyncio.Lock())
        async with lock:
            known = self._batch_threads.get(batch_key)
            if known is None:
                ids: set[str] = set()
                page = await self.search_threads(
                    metadata={METADATA_BATCH_KEY: batch_key},
                    limit=SEARCH_PAGE,
                    select=["thread_id"],
                )
                async for thread in page:
                    if thread.get("thread_id"):
                        ids.add(str(thread["thread_id"]))
                known = self._batch_threads[batch_key] = frozenset(ids)
        return known

    # -- cancel / delete ----------------------------------------------------------------

    async def cancel_run(
        self,
        run_id: str,
        *,
        thread_id: str | None = None,
        wait: bool = False,
        action: CancelAction = "interrupt",
    ) -> Run:
        """Cancel a run; repeating it, or cancelling a finished run, is harmless.

        Args:
            run_id: The run.
            thread_id: Its thread.
            wait: Block until the run has stopped.
            action: ``interrupt`` keeps the run (status ``interrupted``); ``rollback``
                deletes the run and its checkpoints (the run is then gone: a NotFound on
                read is expected, and the returned run is marked CANCELLED).

        Returns:
            The run as read after the cancel.
        """
        if action not in ("interrupt", "rollback"):
            raise ValidationError(
                f"{self.backend}: cancel action must be 'interrupt' or 'rollback', not {action!r}"
            )
        path = self._run_path(run_id, thread_id)
        what = f"cancel run {run_id} on thread {thread_id}"
        try:
            await self.transport.request(
                "POST",
                f"{path}/cancel",
                action=what,
                params={"wait": 1 if wait else 0, "action": action},
                timeout=None if wait else self.transport.request_timeout_seconds,
            )
        except NotFound as exc:
            # "No matching runs to cancel": the run finished (or was rolled back) already;
            # reading it back below tells which (a NotFound there is a real unknown run).
            logger.debug("%s: %s: nothing to cancel (%s); reading the run", self.backend, what, exc)
        try:
            return await self.get_run(run_id, thread_id=thread_id)
        except NotFound:
            if action == "rollback":
                return Run(
                    id=run_id,
                    thread_id=thread_id,
                    status=RunStatus.CANCELLED,
                    raw_status="rolled_back",
                    backend=self.backend,
                )
            raise

    async def delete_run(self, run_id: str, *, thread_id: str | None = None) -> None:
        """Delete a run and its record (a running run is deleted too, answered 204)."""
        await self.transport.request(
            "DELETE",
            self._run_path(run_id, thread_id),
            action=f"delete run {run_id} on thread {thread_id}",
        )

    # -- wait ---------------------------------------------------------------------------

    async def join(self, run: Run, *, timeout_seconds: float | None = None) -> dict[str, Any]:
        """Block until the run ends (``GET .../join``) and return the thread's values.

        Args:
            run: The run.
            timeout_seconds: Longest wait for this one request (None: no limit).
        """
        body = await self.transport.request_json(
            "GET",
            f"{self._run_path(run.id, run.thread_id)}/join",
            action=f"join run {run.id} on thread {run.thread_id}",
            timeout=timeout_seconds,
            mode=RetryMode.NEVER if timeout_seconds else RetryMode.IDEMPOTENT,
        )
        return body if isinstance(body, dict) else {"value": body}

    async def wait_for_run(
        self,
        run: Run | str,
        *,
        thread_id: str | None = None,
        timeout_seconds: float | None = None,
        cancel_on_timeout: bool | None = None,
        policy: PollPolicy | None = None,
        on_change: Callable[[Run], Any] | None = None,
        tool_handler: ToolHandler | None = None,
        confirm_status: bool = False,
    ) -> Run:
        """Wait for a terminal state by joining the run (server push), not by polling.

        Each join is given the time left before ``timeout_seconds`` (at most
        ``JOIN_CHUNK_SECONDS``); a join cut by a proxy or a timeout is followed by a read
        of the run and another join.

        About one request per run: a join that answers the thread's values ends the wait
        with the run COMPLETED, and those values are kept for :meth:`get_result`. The join's
        answer is the same for a success and for a run cancelled from elsewhere in mid-run,
        so the threads whose joins answered within 0.1 s are checked together in one
        ``POST /threads/search`` (status ``interrupted``); such a thread, or an answer with
        an error, an interrupt or no values, is followed by a read of the run for its exact
        status. (A run rolled back from elsewhere leaves its thread ``idle`` and is not
        told apart.) ``confirm_status=True`` reads the run after every join instead.

        Raises:
            RunTimedOut: The deadline passed (the run was cancelled if ``cancel_on_timeout``).
        """
        if tool_handler is not None:
            raise self._unsupported(
                "tool_handler", "LangGraph runs interrupt instead; resume with a command."
            )
        current = run if isinstance(run, Run) else await self.get_run(run, thread_id=thread_id)
        wait_policy = self._policy(policy, timeout_seconds, cancel_on_timeout)

        async def join(chunk: float) -> dict[str, Any]:
            return await self.join(current, timeout_seconds=chunk)

        async def read() -> Run:
            return await self.get_run(current.id, thread_id=current.thread_id)

        async def answered(values: Any) -> Run | None:
            if (
                values is None
                or confirm_status
                or not _answers_success(values)
                or await self._interrupted(current)
            ):
                return None
            # the join answered the run's final values: no read of the run
            self._keep_values(current.id, values)
            return current.model_copy(
                update={
                    "status": RunStatus.COMPLETED,
                    "raw_status": "success",
                    "raw": {**current.raw, "status": "success"},
                }
            )

        def annotate(observed: Run, values: Any) -> Run:
            error = _join_error(values)
            if error and observed.status.is_terminal and not observed.status.is_success:
                return observed.model_copy(update={"error": error})
            return observed

        step = join_step(
            join,
            read,
            chunk_seconds=JOIN_CHUNK_SECONDS,
            answered=answered,
            annotate=annotate,
            backend=self.backend,
        )
        return await self._wait(step, current, policy=wait_policy, on_change=on_change)

    def join_stream(
        self,
        run: Run,
        *,
        stream_mode: str | Sequence[str] | None = None,
        cancel_on_disconnect: bool = False,
        last_event_id: str | None = None,
        max_reconnects: int = 5,
    ) -> AsyncIterator[RunEvent]:
        """Stream a run's events until it ends (``GET .../stream``).

        A dropped connection reconnects with ``Last-Event-ID`` set to the last event
        received, so no event is lost or repeated (events already seen are also skipped by
        id, in case a server replays them).

        Args:
            run: The run.
            stream_mode: Modes to receive (a subset of those the run was created with).
            cancel_on_disconnect: Ask the server to cancel the run if we disconnect.
            last_event_id: Resume after this event.
            max_reconnects: Reconnections tried after a drop, before the error is raised.
        """
        params: dict[str, Any] = {"cancel_on_disconnect": cancel_on_disconnect}
        if stream_mode is not None:
            params["stream_mode"] = (
                [stream_mode] if isinstance(stream_mode, str) else list(stream_mode)
            )
        return self._sse(
            "GET",
            f"{self._run_path(run.id, run.thread_id)}/stream",
            action=f"join the stream of run {run.id} on thread {run.thread_id}",
            params=params,
            last_event_id=last_event_id,
            max_reconnects=max_reconnects,
        )

    def stream_events(self, run: Run, **options: Any) -> AsyncIterator[RunEvent]:
        """Same as :meth:`join_stream` (the protocol's name)."""
        return self.join_stream(run, **options)

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

    # -- results ------------------------------------------------------------------------

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

    async def _interrupted(self, run: Run) -> bool:
        """Whether the run's thread is ``interrupted`` (checked in bulk); True on doubt."""
        if not run.thread_id:
            return True
        if self._status_check is None:
            self._status_check = _StatusCheck(self)
        try:
            return await self._status_check.interrupted(run.thread_id)
        except AgentRunsError as exc:
            logger.debug("%s: bulk status check failed (%s); reading the run", self.backend, exc)
            return True

    def _keep_values(self, run_id: str, values: dict[str, Any]) -> None:
        self._join_values[run_id] = values
        while len(self._join_values) > JOIN_VALUES_KEPT:
            self._join_values.popitem(last=False)

    async def get_result(self, run: Run) -> ThreadResult:
        """The thread's state values after the run, its messages and last AI text.

        Taken from the join's answer when :meth:`wait_for_run` joined this run (no
        request; ``source="join"``); otherwise read from ``GET /threads/{id}/state``
        (``source="state"``).
        """
        if not run.thread_id:
            raise ValidationError(
                f"{self.backend}: {run.describe()} has no thread to read", backend=self.backend
            )
        values: Any = self._join_values.pop(run.id, None)
        source = "join"
        if values is None:
            state = await self.get_thread_state(run.thread_id)
            values = state.get("values")
            source = "state"
        values = values if isinstance(values, dict) else {"value": values}
        messages = [m for m in values.get("messages") or [] if isinstance(m, dict)]
        return ThreadResult(
            thread_id=run.thread_id,
            run_id=run.id,
            messages=messages,
            values=values,
            text=_last_ai_text(messages),
            source=source,
        )

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

    async def find_batch_runs(self, batch_key: str) -> list[Run]:
        """Every run tagged with ``batch_key`` (threads searched by metadata, then their runs)."""
        runs: list[Run] = []
        page = await self.search_threads(metadata={METADATA_BATCH_KEY: batch_key})
        async for thread in page:
            tid = thread.get("thread_id")
            if not tid:
                continue
            try:
                run_page = await self.list_runs(thread_id=str(tid), limit=50)
            except NotFound:
                continue
            async for run in run_page:
                if run.metadata.get(METADATA_BATCH_KEY) == batch_key:
                    runs.append(run)
        return runs


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


def _answers_success(values: Mapping[str, Any]) -> bool:
    """Whether a join's answer is a finished run's values (not an error, interrupt or {})."""
    return bool(values) and "__error__" not in values and "__interrupt__" not in values


def _join_error(values: Mapping[str, Any] | None) -> str | None:
    """The error a join reported for a failed run (``{"__error__": {error, message}}``)."""
    err = values.get("__error__") if values else None
    if isinstance(err, Mapping):
        kind, message = err.get("error"), err.get("message")
        return f"{kind}: {message}" if kind and message else str(message or kind or err)
    return None


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
