"""OpenAI-compatible Assistants API v2: threads and runs (seed 000).

Served today by Azure OpenAI and other OpenAI-compatible servers. OpenAI itself retired
the Assistants API on 2026-08-26: api.openai.com answers 404 on every threads path, which
this client reports plainly (and never retries).

Waiting polls ``GET .../runs/{id}`` through the shared wait engine and follows the
server's ``openai-poll-after-ms`` hint on every answer. A run that asks for tool outputs
(``requires_action``) is served by a ``tool_handler`` when one is given.

Creates are duplicate-safe: a request without a thread first creates the thread (an
ambiguous failure there leaves at worst an empty thread, never a run), then the run is
created with a one-off ``prefect_agent_runs_create_id`` in its metadata. After a timeout
or a 5xx the thread's recent runs are searched for that marker before anything is sent
again, and a 400 "already has an active run run_X" adopts run_X when it carries our marker.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from prefect_agent_runs import timing
from prefect_agent_runs.backends.base import (
    RunEvent,
    ToolHandler,
)
from prefect_agent_runs.backends.create import CREATE_ID_KEY, create_reconciled
from prefect_agent_runs.backends.openai_assistants.core import (
    DEFAULT_BASE_URL,
    POLL_AFTER_HEADER,
    RETIRED_MESSAGE,
    STATUS_MAP,
    AssistantsCore,
)
from prefect_agent_runs.backends.openai_assistants.payloads import (
    _timestamp,
    active_run_id,
    message_text,
)
from prefect_agent_runs.backends.openai_assistants.watch import CreateStream
from prefect_agent_runs.backends.openai_assistants.wire import (
    _call_handler,
    _expires_text,
    _stream_error,
    _tool_name,
    tool_calls,
)
from prefect_agent_runs.backends.sse import read_events
from prefect_agent_runs.backends.steps import hint_seconds
from prefect_agent_runs.errors import (
    ApiError,
    BadRequest,
    Conflict,
    RateLimited,
    RunRequiresAction,
    ServerError,
    TransportError,
)
from prefect_agent_runs.http import RetryMode
from prefect_agent_runs.models import (
    Run,
    RunRequest,
    RunStatus,
    ThreadResult,
)
from prefect_agent_runs.transient import Backoff, is_transient, may_have_started
from prefect_agent_runs.waiting import Observation, PollPolicy, cancel_quietly

__all__ = [
    "CREATE_ID_KEY",
    "DEFAULT_BASE_URL",
    "RETIRED_MESSAGE",
    "STATUS_MAP",
    "AssistantsClient",
    "active_run_id",
    "message_text",
    "tool_calls",
]

logger = logging.getLogger("prefect_agent_runs.backends.openai_assistants")

MAX_CAPTURED_RESULTS = 10_000
"""Most runs whose streamed messages are kept for ``get_result`` (the oldest go first; a
batch collects each run's result as it ends, so it holds a handful)."""


class AssistantsClient(AssistantsCore):
    """Async client for the threads/runs API of Assistants v2 (Azure OpenAI and compatibles).

    Args:
        base_url: The API root, e.g. ``https://<resource>.openai.azure.com/openai`` (with
            ``api_version``) or ``http://127.0.0.1:8000/v1``.
        api_key: The secret: ``Authorization: Bearer`` (OpenAI style) or ``api-key``
            (Azure mode). Never logged or shown in a message.
        organization: Sent as ``OpenAI-Organization``.
        project: Sent as ``OpenAI-Project``.
        api_version: Azure mode: the ``api-version`` query parameter sent on every call;
            the key then goes in the ``api-key`` header.
        headers: Extra headers on every request.
        request_timeout_seconds: Timeout of one HTTP request.
        max_retries: Transport retries.
        max_concurrency: Requests in flight.
        policy: Default wait policy.
        http_client: An ``httpx.AsyncClient`` to use (tests, respx).
        clock: Monotonic clock for wait deadlines (tests).
        sleep: Sleep between polls and retries (tests).

    Examples:
        ```python
        async with AssistantsClient(base_url, api_key=key, api_version="2024-05-01-preview") as c:
            run = await c.create_run(RunRequest(assistant_id="asst_1", message="hi"))
            run = await c.wait_for_run(run, timeout_seconds=600)
            print((await c.get_result(run)).text)
        ```
    """

    backend: ClassVar[str] = "openai_assistants"
    # -- create in one request ----------------------------------------------------------

    async def create_thread_and_run(self, request: RunRequest) -> Run:
        """Create a thread and a run in one request (``POST /threads/runs``).

        Not duplicate-safe after an ambiguous failure (there is no way to find the thread
        again): the request is sent once and such a failure is raised, saying a run may
        exist. :meth:`create_run` (thread first, then run) is the safe way.

        Args:
            request: What to start (``thread_id`` must be None).

        Returns:
            The run.
        """
        if request.thread_id is not None:
            raise self._invalid("create_thread_and_run starts a new thread; thread_id is set")
        body = self.thread_and_run_payload(request)
        action = f"create a thread and run of assistant {request.assistant_id!r}"
        try:
            answer = await self.transport.request_json(
                "POST", "/threads/runs", action=action, mode=RetryMode.CREATE, json=body
            )
        except (TransportError, ServerError) as exc:
            if isinstance(exc, TransportError) and exc.reached_server is False:
                raise
            exc.message = (
                f"{exc.message} — a thread and run may have been created; it cannot be looked "
                "up (no thread list API), so it was not resent"
            )
            raise
        return self.to_run(answer)

    # -- cancel ---------------------------------------------------------------------------

    async def cancel_run(
        self,
        run_id: str,
        *,
        thread_id: str | None = None,
        wait: bool = False,
        timeout_seconds: float | None = None,
    ) -> Run:
        """Cancel a run; repeating it, or cancelling a finished run, is harmless.

        Args:
            run_id: The run.
            thread_id: Its thread.
            wait: Poll until the run has left ``cancelling`` (it ends as ``cancelled``, or
                as whatever it reached first).
            timeout_seconds: Longest wait when ``wait`` (None: the client policy's).

        Returns:
            The run after the cancel (terminal when ``wait``).

        Raises:
            BadRequest: The server refused to cancel a run that is still active.
        """
        path = self._run_path(run_id, thread_id)
        what = f"cancel run {run_id} on thread {thread_id}"
        try:
            body = await self.transport.request_json("POST", f"{path}/cancel", action=what)
            run = self.to_run(body)
        except (BadRequest, Conflict) as exc:
            # The run is finished or already cancelling: read it back.
            run = await self.get_run(run_id, thread_id=thread_id)
            if not (run.status.is_terminal or run.status is RunStatus.CANCELLING):
                raise
            logger.debug("%s: %s: nothing to cancel (%s)", self.backend, what, exc)
        if wait and not run.status.is_terminal:
            wait_policy = self._policy(None, timeout_seconds, False)
            run = await self._wait(
                self._poll_step(run, None), run, policy=wait_policy, on_change=None
            )
        return run

    # -- tool outputs -----------------------------------------------------------------------

    async def submit_tool_outputs(
        self,
        run: Run,
        outputs: Mapping[str, str] | Sequence[Mapping[str, Any]],
    ) -> Run:
        """Send the outputs of the tool calls a ``requires_action`` run asked for.

        Sent once unless it provably never reached the server (a repeat would be refused).

        Args:
            run: The run (``requires_action``).
            outputs: ``{tool_call_id: output}``, or ``[{"tool_call_id", "output"}]``.

        Returns:
            The run as the server answered (``queued`` / ``in_progress`` again).
        """
        if isinstance(outputs, Mapping):
            items = [{"tool_call_id": k, "output": v} for k, v in outputs.items()]
        else:
            items = [dict(o) for o in outputs]
        for item in items:
            if not isinstance(item.get("tool_call_id"), str) or not isinstance(
                item.get("output"), str
            ):
                raise self._invalid(
                    f"tool outputs need a string tool_call_id and a string output: {item!r}"
                )
        body = await self.transport.request_json(
            "POST",
            f"{self._run_path(run.id, run.thread_id)}/submit_tool_outputs",
            action=f"submit {len(items)} tool output(s) to run {run.id} on thread {run.thread_id}",
            mode=RetryMode.CREATE,
            json={"tool_outputs": items},
        )
        return self.to_run(body)

    # -- wait -------------------------------------------------------------------------------

    def _poll_step(
        self, current: Run, tool_handler: ToolHandler | None
    ) -> Callable[[float | None], Awaitable[Observation]]:
        """One observation: GET the run, follow ``openai-poll-after-ms``, serve tool calls."""
        outputs: dict[str, str] = {}
        submitted: set[str] = set()
        warned_expiry = False

        async def step(remaining: float | None) -> Observation:
            nonlocal warned_expiry
            response, body = await self._get_run_response(current.id, current.thread_id)
            run = self.to_run(body)
            hint = hint_seconds(response, POLL_AFTER_HEADER)
            if run.status is RunStatus.REQUIRES_ACTION:
                calls = tool_calls(run)
                pending = [c for c in calls if str(c.get("id")) not in submitted]
                if tool_handler is None:
                    names = [_tool_name(c) for c in calls]
                    raise RunRequiresAction(
                        f"{self.backend}: {run.describe()} waits for tool outputs for "
                        f"{', '.join(names) or 'unnamed tools'} and no tool_handler was given; "
                        "pass tool_handler= to wait_for_run, or submit_tool_outputs yourself"
                        + _expires_text(run),
                        run=run,
                        tool_names=names,
                    )
                if pending:
                    for call in pending:
                        call_id = str(call.get("id"))
                        if call_id not in outputs:
                            outputs[call_id] = await _call_handler(tool_handler, call)
                    ids = [str(c.get("id")) for c in calls]
                    try:
                        run = await self.submit_tool_outputs(run, {i: outputs[i] for i in ids})
                    except BadRequest:
                        # Refused: the run may have moved on (expired, cancelled, or an
                        # earlier submit landed after all). Look again before giving up.
                        again = await self.get_run(current.id, thread_id=current.thread_id)
                        if (
                            again.status is RunStatus.REQUIRES_ACTION
                            and [str(c.get("id")) for c in tool_calls(again)] == ids
                        ):
                            raise
                        run = again
                    submitted.update(ids)
                    hint = 0.0 if not run.status.is_terminal else None
            expires = _timestamp(run.raw.get("expires_at"))
            if (
                expires is not None
                and not run.status.is_terminal
                and not warned_expiry
                and expires.timestamp() < time.time()
            ):
                warned_expiry = True
                logger.warning(
                    "%s: %s is past its expires_at (%s) and not finished; the server should "
                    "expire it, still polling",
                    self.backend,
                    run.describe(),
                    expires.isoformat(),
                )
            return Observation(run, poll_after_seconds=hint)

        return step

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
    ) -> Run:
        """Poll the run until it is terminal, following the server's poll hint.

        Args:
            run: The run, or its id (then ``thread_id`` is required).
            thread_id: The run's thread, when ``run`` is an id.
            timeout_seconds: Longest wait (None: the policy's).
            cancel_on_timeout: Cancel the remote run when the deadline passes.
            policy: Overrides the client's wait policy.
            on_change: Called with the run on each status change.
            tool_handler: Answers ``requires_action``: called (sync or async) with each
                tool call's JSON, returns the output string; the outputs are submitted and
                the wait goes on.

        Returns:
            The run in its terminal state (completed or not: see ``raise_for_outcome``).

        Raises:
            RunRequiresAction: The run waits for tool outputs and no ``tool_handler`` was
                given (``tool_names`` lists the tools).
            RunTimedOut: The deadline passed (the run was cancelled if asked).
        """
        current = run if isinstance(run, Run) else await self.get_run(run, thread_id=thread_id)
        wait_policy = self._policy(policy, timeout_seconds, cancel_on_timeout)
        return await self._wait(
            self._poll_step(current, tool_handler), current, policy=wait_policy, on_change=on_change
        )

    # -- create and watch on the create's stream (the batch path) --------------------------

    async def create_and_wait(
        self,
        request: RunRequest,
        *,
        policy: PollPolicy | None = None,
        on_created: Callable[[Run], Any] | None = None,
        on_change: Callable[[Run], Any] | None = None,
        capture_result: bool = True,
        tool_handler: ToolHandler | None = None,
    ) -> Run:
        """Create a run with ``stream: true`` and wait for its end on that stream.

        Two requests per run: the thread (when the request has none) and the streamed run
        create, whose events carry the run's end and the messages it wrote. Duplicate-safe
        like :meth:`create_run`: a failure before ``thread.run.created`` arrived (timeout,
        5xx, dropped connection) is reconciled by looking the thread's runs up for this
        create's marker before anything is resent, and a 400 "already has an active run"
        adopts our run. A stream that stops after the run is known falls back to polling
        (:meth:`wait_for_run`'s step) and the result to the messages list. Capability
        ``watch_on_create`` (:class:`~prefect_agent_runs.batch.CreateWatcher`).

        Args:
            request: What to start.
            policy: Overrides the client's wait policy (``timeout_seconds`` counts from
                when the run exists; the remote run is cancelled on timeout, and when this
                coroutine is cancelled).
            on_created: Called (sync or async) with the run as soon as it exists.
            on_change: Called with the run on each status change.
            capture_result: Keep the messages the stream carried for the next
                :meth:`get_result` of this run (which then sends no request).
            tool_handler: Answers ``requires_action`` (as in :meth:`wait_for_run`).

        Returns:
            The run in its terminal state.

        Raises:
            RunRequiresAction: The run waits for tool outputs and no ``tool_handler``.
            RunTimedOut: The deadline passed (the run was cancelled if asked).
        """
        thread_id, payload, create_id = await self._prepare_create(request)
        action = self.create_action(request, thread_id) + " (streamed)"
        stream = CreateStream(
            self,
            self._runs_path(thread_id),
            payload,
            action=action,
            read_timeout=self.transport.request_timeout_seconds,
        )

        retry = self.transport.retry_policy
        backoff = Backoff(retry.initial_backoff_seconds, retry.max_backoff_seconds)

        async def send() -> Run:
            # A stream is not resent by the transport: resend here what provably started
            # nothing (a connect error, a 408 or 429), as the transport does for a create.
            attempt = 0
            while True:
                try:
                    return await stream.open()
                except BadRequest as exc:
                    return await self._adopt_active(exc, thread_id, create_id)
                except (TransportError, ApiError) as exc:
                    if (
                        may_have_started(exc)
                        or not is_transient(exc)
                        or attempt >= retry.max_retries
                    ):
                        raise
                    delay = backoff.delay(attempt)
                    if isinstance(exc, RateLimited) and exc.retry_after is not None:
                        delay = min(exc.retry_after, retry.max_retry_after_seconds)
                    attempt += 1
                    logger.info("%s (retrying in %.2fs)", exc, delay)
                    await (self._sleep or timing.sleep)(delay)

        async def lookup() -> Run | None:
            return await self._find_created(thread_id, create_id)

        try:
            run = await create_reconciled(
                send, lookup, backend=self.backend, action=action, **self._create_kwargs()
            )
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s: created %s (streamed)", self.backend, run.describe())
            try:
                if on_created is not None:
                    answer = on_created(run)
                    if inspect.isawaitable(answer):
                        await answer
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled before the wait began
                    await stream.aclose()
                    await cancel_quietly(
                        lambda: self.cancel_run(run.id, thread_id=run.thread_id),
                        run,
                        reason=f"{type(exc).__name__} before its wait",
                    )
                raise
            poll = self._poll_step(run, tool_handler)
            streamed = stream.run is not None and stream.run.id == run.id
            final = await self._wait(
                stream.step(poll) if streamed else poll,
                run,
                policy=self._policy(policy, None, None),
                on_change=on_change,
                sleep=stream.sleep if streamed else None,
                before_cancel=stream.aclose,
            )
        finally:
            await stream.aclose()
        if capture_result and final.status.is_success and stream.saw_end(final):
            self._captured[final.id] = stream.messages
            while len(self._captured) > MAX_CAPTURED_RESULTS:
                self._captured.popitem(last=False)
        return final

    # -- results ------------------------------------------------------------------------

    async def get_result(self, run: Run) -> ThreadResult:
        """The messages the run wrote to its thread (oldest first) and its last assistant text.

        Reads ``GET /threads/{t}/messages?run_id=<run>&order=asc`` through every page and
        keeps only messages whose ``run_id`` is the run's (some servers ignore the filter).
        A run that :meth:`create_and_wait` saw end on its stream is answered from the
        messages the stream carried (no request), once.
        """
        if not run.thread_id:
            raise self._invalid(f"{run.describe()} has no thread to read")
        messages = self._captured.pop(run.id, None)
        if messages is None:
            page = await self.list_messages(run.thread_id, run_id=run.id, order="asc")
            messages = [m for m in await page.get_all() if m.get("run_id") == run.id]
        text: str | None = None
        for message in reversed(messages):
            if message.get("role") == "assistant":
                text = message_text(message)
                break
        return ThreadResult(
            thread_id=run.thread_id, run_id=run.id, messages=messages, values=None, text=text
        )

    # -- streaming ------------------------------------------------------------------------

    def stream_run(self, request: RunRequest) -> AsyncIterator[RunEvent]:
        """Create a run with ``stream: true`` and yield its events until ``done``.

        A request without a thread first gets one (as in :meth:`create_run`). The create is
        sent once (a stream cannot be reconciled). Events are
        ``RunEvent(event=..., data=<decoded JSON>, id=...)``: ``thread.run.*``,
        ``thread.run.step.*``, ``thread.message.*``.

        Args:
            request: What to start.

        Raises:
            ApiError: The server sent an ``error`` event (its message is in the error).
        """
        return self._stream_run(request)

    async def _stream_run(self, request: RunRequest) -> AsyncIterator[RunEvent]:
        new_thread = request.thread_id is None
        payload = self.run_payload(request, include_messages=not new_thread)
        payload["stream"] = True
        if new_thread:
            thread = await self._create_thread(self.thread_payload(request))
            thread_id = str(thread["id"])
        else:
            thread_id = self._check_id(request.thread_id, "thread_id")
        action = f"stream a run of assistant {request.assistant_id!r} on thread {thread_id}"

        def check(event: RunEvent) -> None:
            if event.event == "error":
                raise _stream_error(self.backend, action, event.data, 200)

        events = read_events(
            self.transport,
            "POST",
            f"/threads/{self.segment(thread_id, 'thread_id')}/runs",
            action=action,
            json_body=payload,
            check=check,
            is_end=lambda event, data: event.event == "done" or data == "[DONE]",
        )
        async for event in events:
            yield event

    def stream_events(self, run: Run | RunRequest, **options: Any) -> AsyncIterator[RunEvent]:
        """Stream a run's events: only for a new run (``RunRequest``), via :meth:`stream_run`.

        The Assistants API cannot join the stream of a run that already exists.

        Args:
            run: A ``RunRequest`` to start and stream.

        Raises:
            NotSupported: ``run`` is an existing ``Run``.
        """
        if isinstance(run, RunRequest):
            return self.stream_run(run)
        raise self._unsupported(
            "stream_events of an existing run",
            "The Assistants API streams a run only while creating it: use "
            "stream_run(request) (or stream_events(request)), or wait_for_run to poll.",
        )
