"""LangGraph Platform / Agent Server runs (seeds 001 and 004).

Waiting uses the server's push: ``GET .../join`` long-polls until the run ends (and
returns the thread's values); ``GET .../stream`` (join_stream) streams its events over
SSE and resumes after a dropped connection with ``Last-Event-ID``. A batch watches its
runs in bulk instead (:meth:`LangGraphClient.watch_many`, capability ``bulk_watch``): one
``POST /threads/search`` answers for up to 1,000 runs and hands back their values.

Creates are duplicate-safe: every run gets a thread id chosen by us (uuid5 of
``(batch_key, key)`` for a batch item, else a uuid4) sent with ``if_not_exists:
"create"``, and a one-off ``prefect_agent_runs_create_id`` in its metadata; after a
timeout or a 5xx the thread's runs are listed and the run adopted before anything is sent
again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal

import httpx

from prefect_agent_runs import timing
from prefect_agent_runs.backends.base import (
    Capability,
    RunEvent,
    ToolHandler,
)
from prefect_agent_runs.backends.create import CREATE_ID_KEY, new_create_id
from prefect_agent_runs.backends.langgraph.core import (
    PASSTHROUGH_FIELDS,
    STATUS_MAP,
    LangGraphCore,
    _last_ai_text,
)
from prefect_agent_runs.backends.langgraph.joins import (
    JOIN_CHUNK_SECONDS,
    JOIN_VALUES_KEPT,
    SEARCH_PAGE,
    WATCH_CHUNK,
    WATCH_OTHER_SECONDS,
    StatusCheck,
    _answers_success,
    _join_error,
)
from prefect_agent_runs.backends.steps import join_step
from prefect_agent_runs.errors import (
    AgentRunsError,
    NotFound,
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
from prefect_agent_runs.transient import TRANSIENT_TOLERANCE
from prefect_agent_runs.waiting import Clock, PollPolicy, Sleep

__all__ = ["PASSTHROUGH_FIELDS", "STATUS_MAP", "LangGraphClient"]

logger = logging.getLogger("prefect_agent_runs.backends.langgraph")

CancelAction = Literal["interrupt", "rollback"]


class LangGraphClient(LangGraphCore):
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
            Capability.BULK_WATCH,
            Capability.QUEUES_RUNS,
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
        max_retries: int = TRANSIENT_TOLERANCE,
        max_concurrency: int = 32,
        policy: PollPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        verify_tls: bool = True,
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
            verify_tls=verify_tls,
            sleep=sleep,
        )
        super().__init__(transport, policy=policy, clock=clock, sleep=sleep)
        # run id -> (the thread's values, where they came from: "join" or "search"), for
        # get_result without a request
        self._join_values: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()
        # batch key -> the threads that exist for it (one bulk search per batch), and the
        # threads this client has sent a create for (the bulk answer may predate them)
        self._batch_threads: dict[str, frozenset[str]] = {}
        self._batch_locks: dict[str, asyncio.Lock] = {}
        self._touched: set[str] = set()
        self._status_check: StatusCheck | None = None
        self._other_sweep = float("-inf")  # when watch_many last asked for other statuses

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
            if "input" not in payload and "command" not in payload:
                raise ValidationError(
                    f"{self.backend}: request key {request.key!r} has neither message nor input "
                    "(nor a command): a run on a new thread would fail with EmptyInputError "
                    "(nothing was sent)",
                    backend=self.backend,
                )
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

    # -- cancel -------------------------------------------------------------------------

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

    # -- results ------------------------------------------------------------------------

    async def _interrupted(self, run: Run) -> bool:
        """Whether the run's thread is ``interrupted`` (checked in bulk); True on doubt."""
        if not run.thread_id:
            return True
        if self._status_check is None:
            self._status_check = StatusCheck(self)
        try:
            return await self._status_check.interrupted(run.thread_id)
        except AgentRunsError as exc:
            logger.debug("%s: bulk status check failed (%s); reading the run", self.backend, exc)
            return True

    def _keep_values(self, run_id: str, values: dict[str, Any], source: str = "join") -> None:
        self._join_values[run_id] = (values, source)
        while len(self._join_values) > JOIN_VALUES_KEPT:
            self._join_values.popitem(last=False)

    async def get_result(self, run: Run) -> ThreadResult:
        """The thread's state values after the run, its messages and last AI text.

        Taken from the join's answer when :meth:`wait_for_run` joined this run (no
        request; ``source="join"``), or from the bulk search that saw it end
        (:meth:`watch_many`, ``source="search"``); otherwise read from ``GET
        /threads/{id}/state`` (``source="state"``).
        """
        if not run.thread_id:
            raise ValidationError(
                f"{self.backend}: {run.describe()} has no thread to read", backend=self.backend
            )
        kept = self._join_values.pop(run.id, None)
        values: Any = None
        source = "state"
        if kept is not None:
            values, source = kept
        else:
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

    # -- many runs at once -----------------------------------------------------------------

    async def watch_many(self, runs: Sequence[Run]) -> list[Run]:
        """One sweep over many runs (capability ``bulk_watch``): the ones that ended.

        ``POST /threads/search {ids, status: "idle"}`` (up to ``WATCH_CHUNK`` threads per
        request) answers the threads that are ``idle`` again, with their values (kept for
        :meth:`get_result`, ``source="search"``). A thread is ``busy`` from the moment a
        run is created on it until its last queued run ends, so ``idle`` means its runs
        succeeded: no read of the run. Runs that ended otherwise leave their thread
        ``error`` or ``interrupted``: at most every ``WATCH_OTHER_SECONDS`` the sweep also
        asks for the status of the other threads (``select: [thread_id, status]``) and
        reads each run whose thread is neither ``busy`` nor ``idle`` for its exact status
        (``error``, ``timeout``, ``interrupted``). So a success is seen one request after
        it ends; a failure within ``WATCH_OTHER_SECONDS`` more. (A run rolled back from
        elsewhere leaves its thread ``idle`` and is not told apart, as with joins.)

        Args:
            runs: The runs alive.

        Returns:
            The runs that ended, as now known; the others are left out (unchanged).
        """
        by_thread: dict[str, list[Run]] = {}
        for run in runs:
            if run.thread_id:
                by_thread.setdefault(run.thread_id.lower(), []).append(run)
        ids = list(by_thread)
        out: list[Run] = []
        for at in range(0, len(ids), WATCH_CHUNK):
            chunk = ids[at : at + WATCH_CHUNK]
            for thread in await self._search_ids(chunk, status="idle"):
                values = thread.get("values")
                tid = str(thread.get("thread_id", "")).lower()
                if thread.get("status") != "idle":
                    continue
                for run in by_thread.pop(tid, []):
                    if not (isinstance(values, dict) and values and _wrote_after(thread, run)):
                        # idle without this run's values: cancelled before it started, or
                        # rolled back; the run says how it ended
                        try:
                            out.append(await self.get_run(run.id, thread_id=run.thread_id))
                        except NotFound:
                            continue  # gone (rolled back, deleted): the deadline decides
                        continue
                    self._keep_values(run.id, values, "search")
                    out.append(
                        run.model_copy(
                            update={
                                "status": RunStatus.COMPLETED,
                                "raw_status": "success",
                                "raw": {**run.raw, "status": "success"},
                            }
                        )
                    )
        now = (self._clock or timing.monotonic)()
        if not by_thread or now - self._other_sweep < WATCH_OTHER_SECONDS:
            return out
        self._other_sweep = now
        rest = list(by_thread)
        stopped: list[str] = []
        for at in range(0, len(rest), WATCH_CHUNK):
            for thread in await self._search_ids(rest[at : at + WATCH_CHUNK], status=None):
                status = thread.get("status")
                if status not in (None, "busy", "idle"):  # idle since: the next sweep takes it
                    stopped.append(str(thread.get("thread_id", "")).lower())
        errors: dict[str, str] = {}
        for at in range(0, len(stopped), WATCH_CHUNK):
            # the failed threads in full: their error (rare: one request for all of them)
            for thread in await self._search_ids(stopped[at : at + WATCH_CHUNK], status="error"):
                message = _join_error({"__error__": thread.get("error")})
                if message:
                    errors[str(thread.get("thread_id", "")).lower()] = message
        for tid in stopped:
            for run in by_thread.get(tid, []):
                try:
                    observed = await self.get_run(run.id, thread_id=run.thread_id)
                except NotFound:
                    continue  # gone (rolled back, deleted): the engine's deadline decides
                if tid in errors and observed.status.is_terminal and not observed.status.is_success:
                    observed = observed.model_copy(update={"error": errors[tid]})
                out.append(observed)
        return out

    async def _search_ids(self, ids: Sequence[str], *, status: str | None) -> list[dict[str, Any]]:
        """The threads with these ids (``POST /threads/search``): with ``status``, those in
        that status (``idle``: id, values, time of the last write; else whole threads);
        without, every one's id and status."""
        payload: dict[str, Any] = {"ids": list(ids), "limit": len(ids)}
        if status is None:
            payload["select"] = ["thread_id", "status"]
        elif status == "idle":
            payload["status"] = status
            payload["select"] = ["thread_id", "status", "values", "state_updated_at"]
        else:  # whole threads ("error" is not a field one can select)
            payload["status"] = status
        body = await self.transport.request_json(
            "POST",
            "/threads/search",
            action=f"check the status of {len(ids)} thread(s)",
            json=payload,
            mode=RetryMode.IDEMPOTENT,
        )
        if not isinstance(body, list):
            raise self._bad_shape("a list of threads", body)
        return [t for t in body if isinstance(t, dict)]

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


def _wrote_after(thread: Mapping[str, Any], run: Run) -> bool:
    """Whether the thread's state was written after the run was created (so by the run)."""
    stamp = thread.get("state_updated_at")
    if not isinstance(stamp, str) or run.created_at is None:
        return False
    try:
        written = datetime.fromisoformat(stamp)
    except ValueError:
        return False
    created = run.created_at
    if (written.tzinfo is None) != (created.tzinfo is None):
        return False
    return written >= created
