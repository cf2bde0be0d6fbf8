"""The project thread-runs client (seed 003): ``/api/projects/{projectId}/threads/{threadId}/runs``.

* ``create_run``: ``POST .../threads/{threadId}/runs`` with ``{message, instructions}``;
  ``message`` (1-4,000 characters) and ``instructions`` (at most 2,000) are checked before
  any request (``ValidationError`` naming the field). The thread must exist (the API
  creates threads only through its chat endpoint), so ``thread_id`` is required.
* ``get_run`` (five statuses: queued, in_progress, completed, failed, expired), polled by
  ``wait_for_run``; ``get_result``: the assistant messages after the run's user message,
  from ``GET .../threads/{threadId}``.
* Errors: ProblemDetails (400, field errors kept) and ``{message, details}`` (401, 403,
  404, 500). Every request sends an ``X-Correlation-Id``, named in every error.
* No list, no cancel: ``NotSupported``. A create whose answer is lost goes through the
  shared create skeleton (:func:`~prefect_agent_runs.backends.create.create_reconciled`):
  the thread's messages are searched for it over the lookup window (adopted when its
  message names the run; a message that names no run fails the item, never resent), and
  only when the message is still not there after the window is the create sent again. The
  bound: a create delivered later than the window may start a second run.
* With ``team_id``, paths take the swagger's ``/api/teams/{teamId}/projects/...`` form.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from prefect_agent_runs.backends.base import BaseRunsClient
from prefect_agent_runs.backends.create import create_reconciled
from prefect_agent_runs.backends.steps import poll_step
from prefect_agent_runs.errors import ServerError, ValidationError
from prefect_agent_runs.http import RetryMode, RetryPolicy, Transport
from prefect_agent_runs.models import Run, RunRequest, ThreadResult
from prefect_agent_runs.models import RunStatus as S
from prefect_agent_runs.responses import parse_error_body
from prefect_agent_runs.transient import TRANSIENT_TOLERANCE
from prefect_agent_runs.waiting import Clock, Observation, PollPolicy, Sleep, wait_for_terminal

__all__ = [
    "INSTRUCTIONS_MAX",
    "MESSAGE_MAX",
    "STATUS_MAP",
    "ProjectThreadsClient",
    "parse_project_error",
]

MESSAGE_MAX = 4000
"""The longest ``message`` the API takes (and it must not be empty)."""
INSTRUCTIONS_MAX = 2000
"""The longest ``instructions`` the API takes."""

STATUS_MAP: dict[str, S] = {
    "queued": S.QUEUED,
    "in_progress": S.RUNNING,
    "completed": S.COMPLETED,
    "failed": S.FAILED,
    "expired": S.EXPIRED,
}
"""The five documented statuses."""


def parse_project_error(body: Any) -> tuple[str | None, str | None, dict[str, list[str]]]:
    """Read ProblemDetails (field errors kept) and ``{message, details}`` bodies.

    Args:
        body: The decoded JSON body.
    """
    message, code, fields = parse_error_body(body)
    if isinstance(body, dict) and isinstance(body.get("details"), str) and body["details"]:
        message = f"{message}: {body['details']}" if message else body["details"]
    return message, code, fields


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _run_id_of(message: Mapping[str, Any]) -> str | None:
    raw = message.get("metadata")
    if not isinstance(raw, str):
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    value = meta.get("runId") if isinstance(meta, dict) else None
    return str(value) if value else None


class ProjectThreadsClient(BaseRunsClient):
    """Async client of a project thread-runs API (JWT bearer token).

    Args:
        base_url: The API root (paths start with ``/api``).
        token: The JWT, sent as ``Authorization: Bearer``.
        project_id: The project whose threads are used.
        team_id: The project's team: use the ``/api/teams/{teamId}/projects/...`` paths.
        request_timeout_seconds: Timeout of one HTTP request.
        max_retries: Transport retries of idempotent requests.
        max_concurrency: Requests in flight at once.
        policy: Default wait policy (the service's own client polls every 2 s).
        http_client: An ``httpx.AsyncClient`` to use (tests).
        clock: Monotonic clock for deadlines (tests).
        sleep: Sleep between observations and retries (tests).
        verify_tls: Verify the server's TLS certificate (default); off logs a warning.
        correlation_id: Makes the ``X-Correlation-Id`` of each request (default uuid4).
        **extra: Other credentials fields (ignored).
    """

    backend: ClassVar[str] = "project_threads"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    status_map: ClassVar[Mapping[str, S]] = STATUS_MAP
    error_parser = staticmethod(parse_project_error)  # type: ignore[assignment]

    def __init__(
        self,
        base_url: str = "http://localhost:5000",
        *,
        token: str | None = None,
        project_id: str | None = None,
        team_id: str | None = None,
        request_timeout_seconds: float = 30.0,
        max_retries: int = TRANSIENT_TOLERANCE,
        max_concurrency: int = 32,
        retry_policy: RetryPolicy | None = None,
        policy: PollPolicy | None = None,
        http_client: Any = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        verify_tls: bool = True,
        correlation_id: Callable[[], str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(
            Transport(
                backend=self.backend,
                base_url=base_url,
                headers={"Authorization": f"Bearer {token}"} if token else {},
                secrets=[token or ""],
                request_timeout_seconds=request_timeout_seconds,
                max_retries=max_retries,
                max_concurrency=max_concurrency,
                retry_policy=retry_policy,
                sleep=sleep,
                http_client=http_client,
                verify_tls=verify_tls,
                error_parser=parse_project_error,
            ),
            policy=policy or PollPolicy(poll_interval_seconds=2.0, max_poll_interval_seconds=10.0),
            clock=clock,
            sleep=sleep,
        )
        if not project_id:
            raise ValidationError("project_threads: project_id is required", backend=self.backend)
        prefix = f"/api/projects/{self.segment(project_id, 'project_id')}"
        if team_id:
            prefix = f"/api/teams/{self.segment(team_id, 'team_id')}" + prefix[4:]
        self.project_id = project_id
        self.prefix = prefix
        self._correlation = correlation_id or (lambda: str(uuid.uuid4()))
        self._user_messages: dict[str, str] = {}

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        cid = self._correlation()
        return await self.transport.request_json(
            method, path, action=f"{what} (X-Correlation-Id {cid})",
            headers={"X-Correlation-Id": cid}, **kwargs,
        )  # fmt: skip

    def _thread_path(self, thread_id: str | None) -> str:
        return f"{self.prefix}/threads/{self.segment(thread_id, 'thread_id')}"

    def to_run(self, raw: Any) -> Run:
        """A :class:`Run` from a ``RunResponse``."""
        if not isinstance(raw, dict) or not raw.get("runId"):
            raise self.bad_shape("a run object", raw)
        raw_status = raw.get("status") if isinstance(raw.get("status"), str) else None
        if raw.get("userMessage"):
            self._user_messages[str(raw["runId"])] = str(raw["userMessage"])
        return Run(
            id=str(raw["runId"]),
            thread_id=str(raw["threadId"]) if raw.get("threadId") else None,
            status=self.normalize(raw_status),
            raw_status=raw_status,
            backend=self.backend,
            assistant_id=raw.get("assistantId"),
            created_at=_parse_time(raw.get("createdAt")),
            started_at=_parse_time(raw.get("startedAt")),
            completed_at=_parse_time(raw.get("completedAt")),
            error=raw.get("errorMessage") or None,
            raw=raw,
        )

    @staticmethod
    def check_request(request: RunRequest) -> tuple[str, str | None]:
        """Check ``message`` and ``instructions`` against the API's limits (no request sent).

        Args:
            request: The run to start.

        Returns:
            (message, instructions).

        Raises:
            ValidationError: A field is missing or too long (the message names it).
        """
        message = request.message
        if message is None and request.input and isinstance(request.input.get("message"), str):
            message = request.input["message"]
        if not message:
            raise ValidationError(
                "project_threads: message is required (1 to 4000 characters)",
                backend="project_threads",
            )
        if len(message) > MESSAGE_MAX:
            raise ValidationError(
                f"project_threads: message is {len(message)} characters; the API takes at "
                f"most {MESSAGE_MAX}",
                backend="project_threads",
            )
        if request.instructions is not None and len(request.instructions) > INSTRUCTIONS_MAX:
            raise ValidationError(
                f"project_threads: instructions is {len(request.instructions)} characters; "
                f"the API takes at most {INSTRUCTIONS_MAX}",
                backend="project_threads",
            )
        return message, request.instructions

    async def create_run(self, request: RunRequest) -> Run:
        """Add the message to the thread and start a run; resent only after the message
        was looked for on the thread over the lookup window (the shared create skeleton).

        Raises:
            ValidationError: Bad input, or no ``thread_id`` (before any request).
            AgentRunsError: The create failed; after a lost answer, the message says
                whether the run may exist.
        """
        message, instructions = self.check_request(request)
        if not request.thread_id:
            raise ValidationError(
                "project_threads: thread_id is required: this API starts runs only on an "
                "existing thread (threads are created through its chat endpoint)",
                backend=self.backend,
            )
        path = self._thread_path(request.thread_id) + "/runs"
        body: dict[str, Any] = {"message": message}
        if instructions is not None:
            body["instructions"] = instructions
        action = f"create run on thread {request.thread_id}" + (
            f" (key {request.key!r})" if request.key else ""
        )

        async def send() -> Run:
            cid = self._correlation()
            raw = await self.transport.request_json(
                "POST", path, action=f"{action} (X-Correlation-Id {cid})",
                mode=RetryMode.CREATE, json=body, headers={"X-Correlation-Id": cid},
            )  # fmt: skip
            return self.to_run(raw)

        thread_id = request.thread_id

        async def lookup() -> Run | None:
            return await self._find_created(thread_id, message)

        return await create_reconciled(
            send, lookup, backend=self.backend, action=action, **self._create_kwargs()
        )

    async def _find_created(self, thread_id: str, message: str) -> Run | None:
        """After a lost create answer: the run, found through the thread's messages.

        The newest user message with this text whose run this client does not know yet;
        None when there is none (yet). A message that names no run cannot be adopted, and
        must not be sent again: that raises (not transient).
        """
        detail = await self._call("GET", self._thread_path(thread_id), f"read thread {thread_id}")
        messages = detail.get("messages") if isinstance(detail, dict) else None
        for item in reversed(messages or []):
            if not isinstance(item, dict):
                continue
            if item.get("role") == "user" and item.get("content") == message:
                run_id = _run_id_of(item)
                if run_id is None:
                    raise ServerError(
                        f"project_threads: the message is on thread {thread_id}, so the run "
                        "exists, but its id is not known; it was not resent",
                        status_code=200,
                        backend=self.backend,
                    )
                if run_id in self._user_messages:
                    continue  # an earlier run of ours with the same text
                return await self.get_run(run_id, thread_id=thread_id)
        return None

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        """Read one run (``thread_id`` is required)."""
        if not thread_id:
            raise ValidationError("project_threads: get_run needs thread_id", backend=self.backend)
        path = f"{self._thread_path(thread_id)}/runs/{self.segment(run_id, 'run_id')}"
        return self.to_run(await self._call("GET", path, f"get run {run_id} on thread {thread_id}"))

    def list_runs(self, *, thread_id: str | None = None, limit: int = 20, **filters: Any) -> Any:
        """Always raises: the API has no list of runs."""
        raise self._unsupported("list_runs", "The project thread-runs API has no list of runs.")

    async def cancel_run(
        self, run_id: str, *, thread_id: str | None = None, wait: bool = False
    ) -> Run:
        """Always raises: the API has no cancel endpoint."""
        raise self._unsupported(
            "cancel_run",
            f"The project thread-runs API has no cancel endpoint; run {run_id} goes on until "
            "it completes, fails or expires.",
        )

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
        """Poll the run until it is terminal (no cancel on timeout: there is no cancel)."""
        current = run if isinstance(run, Run) else await self.get_run(run, thread_id=thread_id)
        tid = current.thread_id or thread_id

        async def read() -> Observation:
            return Observation(await self.get_run(current.id, thread_id=tid))

        kwargs: dict[str, Any] = {}
        if self._clock is not None:
            kwargs["clock"] = self._clock
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        return await wait_for_terminal(
            poll_step(read), current, self._policy(policy, timeout_seconds, False),
            cancel=None, on_change=on_change, **kwargs,
        )  # fmt: skip

    async def get_result(self, run: Run) -> ThreadResult:
        """The assistant messages after the run's user message (up to the next user message).

        The run's user message is the one whose metadata names the run, else the last one
        with the run's text (known from the create answer).
        """
        detail = await self._call(
            "GET", self._thread_path(run.thread_id), f"read thread {run.thread_id}"
        )
        messages = [m for m in (detail.get("messages") or []) if isinstance(m, dict)]
        start = None
        for index, item in enumerate(messages):
            if item.get("role") == "user" and _run_id_of(item) == run.id:
                start = index
        if start is None:
            text = self._user_messages.get(run.id) or run.raw.get("userMessage")
            for index, item in enumerate(messages):
                if item.get("role") == "user" and text and item.get("content") == text:
                    start = index
        replies: list[dict[str, Any]] = []
        if start is not None:
            for item in messages[start + 1 :]:
                if item.get("role") == "user":
                    break
                if item.get("role") == "assistant":
                    replies.append(item)
        return ThreadResult(
            thread_id=run.thread_id,
            run_id=run.id,
            messages=replies,
            text=str(replies[-1]["content"]) if replies else None,
            source="thread",
        )
