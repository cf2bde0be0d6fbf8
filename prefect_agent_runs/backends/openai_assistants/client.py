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
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import httpx

from prefect_agent_runs.backends.base import (
    BaseRunsClient,
    Capability,
    Page,
    RunEvent,
    ToolHandler,
    paged,
)
from prefect_agent_runs.backends.create import CREATE_ID_KEY, first_match, new_create_id
from prefect_agent_runs.backends.paging import Chunk, CursorPager
from prefect_agent_runs.backends.sse import read_events
from prefect_agent_runs.backends.steps import hint_seconds
from prefect_agent_runs.errors import (
    AgentRunsError,
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    RateLimited,
    RunRequiresAction,
    ServerError,
    TransportError,
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
from prefect_agent_runs.waiting import Clock, Observation, PollPolicy, Sleep

__all__ = [
    "CREATE_ID_KEY",
    "DEFAULT_BASE_URL",
    "RETIRED_MESSAGE",
    "STATUS_MAP",
    "AssistantsClient",
]

logger = logging.getLogger("prefect_agent_runs.backends.openai_assistants")

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
"""OpenAI's API root (where the Assistants API no longer answers since 2026-08-26)."""
STATUS_MAP: dict[str, RunStatus] = {
    "queued": RunStatus.QUEUED,
    "in_progress": RunStatus.RUNNING,
    "requires_action": RunStatus.REQUIRES_ACTION,
    "cancelling": RunStatus.CANCELLING,
    "completed": RunStatus.COMPLETED,
    "failed": RunStatus.FAILED,
    "cancelled": RunStatus.CANCELLED,
    "expired": RunStatus.EXPIRED,
    "incomplete": RunStatus.INCOMPLETE,
}
"""The Assistants API's run statuses (DESIGN.md's table)."""
OPENAI_HOST = "api.openai.com"
RETIRED_MESSAGE = (
    "the Assistants API was retired by OpenAI on 2026-08-26: api.openai.com answers 404 on "
    "every threads path. Use the Responses API, or point base_url at Azure OpenAI "
    "(https://<resource>.openai.azure.com/openai with api_version) or another "
    "OpenAI-compatible server that still serves Assistants v2"
)
"""What a 404 from api.openai.com on a threads path means."""

BETA_HEADERS = {"OpenAI-Beta": "assistants=v2"}
POLL_AFTER_HEADER = "openai-poll-after-ms"

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
LIST_MAX_LIMIT = 100
FIND_SCAN_LIMIT = 100
"""Most runs of a thread inspected when looking a run up by its metadata."""

# Fields of CreateRunRequest that RunRequest.options may carry through unchanged.
RUN_OPTIONS = frozenset(
    {
        "model",
        "reasoning_effort",
        "additional_instructions",
        "additional_messages",
        "tools",
        "temperature",
        "top_p",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
)
# Options that belong to the thread we create for a request without a thread.
THREAD_OPTIONS = frozenset({"tool_resources"})

_ACTIVE_RUN_PATTERNS = (
    re.compile(r"already has an active run\s+['\"]?([A-Za-z0-9_\-]+)"),
    re.compile(r"while a run\s+['\"]?([A-Za-z0-9_\-]+)['\"]?\s+is active"),
)

Order = Literal["asc", "desc"]


def _timestamp(value: Any) -> datetime | None:
    """Unix seconds (int or float) to an aware UTC datetime; anything else to None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def active_run_id(message: str) -> str | None:
    """The run id named in an "already has an active run run_X" (or "while a run run_X is
    active") error message, or None.

    Args:
        message: The server's error message (or a message that contains it).
    """
    for pattern in _ACTIVE_RUN_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1).rstrip(".")
    return None


def message_text(message: Mapping[str, Any]) -> str | None:
    """The text of a thread message: its ``text`` content parts, concatenated.

    Args:
        message: A MessageObject.

    Returns:
        The text, or None when the message has no text part.
    """
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text":
            continue
        text = part.get("text")
        if isinstance(text, Mapping):
            value = text.get("value")
            if isinstance(value, str):
                texts.append(value)
        elif isinstance(text, str):
            texts.append(text)
    return "".join(texts) if texts else None


class AssistantsClient(BaseRunsClient):
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
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {Capability.STREAM_EVENTS, Capability.TOOL_OUTPUTS, Capability.CANCEL, Capability.LIST_RUNS}
    )
    status_map: ClassVar[Mapping[str, RunStatus]] = STATUS_MAP

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        api_version: str | None = None,
        headers: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 60.0,
        max_retries: int = 3,
        max_concurrency: int = 32,
        policy: PollPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        all_headers: dict[str, str] = dict(BETA_HEADERS)
        if api_key:
            if api_version:
                all_headers["api-key"] = api_key
            else:
                all_headers["Authorization"] = f"Bearer {api_key}"
        if organization:
            all_headers["OpenAI-Organization"] = organization
        if project:
            all_headers["OpenAI-Project"] = project
        all_headers.update(headers or {})
        all_headers.update(BETA_HEADERS)
        self.api_version = api_version
        self.is_openai_host = (urlsplit(base_url).hostname or "").lower() == OPENAI_HOST
        transport = Transport(
            backend=self.backend,
            base_url=base_url,
            headers=all_headers,
            secrets=[api_key] if api_key else [],
            params={"api-version": api_version} if api_version else None,
            request_timeout_seconds=request_timeout_seconds,
            max_retries=max_retries,
            max_concurrency=max_concurrency,
            http_client=http_client,
            sleep=sleep,
            error_hook=self._retired_hook,
        )
        super().__init__(transport, policy=policy, clock=clock, sleep=sleep)

    # -- errors and mapping ---------------------------------------------------------------

    def _retired_hook(self, error: ApiError) -> ApiError:
        """Explain a 404 from api.openai.com: the Assistants API is gone there."""
        if not (self.is_openai_host and isinstance(error, NotFound)):
            return error
        return NotFound(
            f"{self.backend}: {RETIRED_MESSAGE}. (The server said: {error.message})",
            status_code=error.status_code,
            code=error.code,
            request_id=error.request_id,
            backend=self.backend,
            body_snippet=error.body_snippet,
        )

    def _bad_shape(self, expected: str, got: Any) -> ServerError:
        snippet = json.dumps(got, default=str)[:200]
        return ServerError(
            f"{self.backend}: the server answered something that is not {expected}: {snippet}. "
            "Is base_url an OpenAI-compatible Assistants v2 API root (ending in /v1, or "
            "/openai for Azure)?",
            status_code=200,
            backend=self.backend,
            body_snippet=snippet,
        )

    def to_run(self, raw: Any) -> Run:
        """Normalize an Assistants v2 RunObject.

        Args:
            raw: The server's JSON for the run.

        Returns:
            The run, with the server's JSON in ``raw``.

        Raises:
            ServerError: ``raw`` is not a run object.
        """
        if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str):
            raise self._bad_shape("a run object", raw)
        raw_status = raw.get("status")
        raw_status = raw_status if isinstance(raw_status, str) else None
        status = self.normalize(raw_status)
        completed = (
            raw.get("completed_at")
            or raw.get("failed_at")
            or raw.get("cancelled_at")
            or raw.get("expired_at")
            or raw.get("incomplete_at")
        )
        metadata = raw.get("metadata")
        return Run(
            id=raw["id"],
            thread_id=raw.get("thread_id"),
            status=status,
            raw_status=raw_status,
            backend=self.backend,
            assistant_id=raw.get("assistant_id"),
            created_at=_timestamp(raw.get("created_at")),
            started_at=_timestamp(raw.get("started_at")),
            completed_at=_timestamp(completed),
            metadata=dict(metadata) if isinstance(metadata, Mapping) else {},
            error=_run_error(raw),
            raw=dict(raw),
        )

    def _run_path(self, run_id: str, thread_id: str | None) -> str:
        tid = self.segment(thread_id, "thread_id (Assistants runs live on a thread)")
        rid = self.segment(run_id, "run_id")
        return f"/threads/{tid}/runs/{rid}"

    def _invalid(self, message: str) -> ValidationError:
        return ValidationError(f"{self.backend}: {message}", backend=self.backend)

    def check_metadata(self, metadata: Mapping[str, Any], *, what: str = "metadata") -> None:
        """Check OpenAI's metadata limits before sending anything.

        At most 16 keys, keys up to 64 characters, values strings of up to 512 characters.

        Args:
            metadata: The metadata about to be sent.
            what: Which metadata, for the message (``"run metadata"``...).

        Raises:
            ValidationError: A limit is exceeded (the message names the key).
        """
        if len(metadata) > METADATA_MAX_KEYS:
            raise self._invalid(
                f"{what} has {len(metadata)} keys; the Assistants API allows at most "
                f"{METADATA_MAX_KEYS} (keys: {sorted(metadata)})"
            )
        for key, value in metadata.items():
            if not isinstance(key, str) or len(key) > METADATA_MAX_KEY_CHARS:
                raise self._invalid(
                    f"{what} key {key!r} is longer than {METADATA_MAX_KEY_CHARS} characters"
                )
            if not isinstance(value, str):
                raise self._invalid(
                    f"{what} key {key!r} has a {type(value).__name__} value; the Assistants "
                    "API accepts only string values (convert it yourself, e.g. json.dumps)"
                )
            if len(value) > METADATA_MAX_VALUE_CHARS:
                raise self._invalid(
                    f"{what} key {key!r} has a value of {len(value)} characters; the "
                    f"Assistants API allows at most {METADATA_MAX_VALUE_CHARS}"
                )

    # -- create -------------------------------------------------------------------------

    def _user_messages(self, request: RunRequest) -> list[dict[str, Any]]:
        """The messages a request adds to its thread: ``input["messages"]``, then ``message``."""
        messages: list[dict[str, Any]] = []
        if request.input is not None:
            extra = set(request.input) - {"messages"}
            items = request.input.get("messages")
            if extra or not isinstance(items, list):
                raise self._invalid(
                    "RunRequest.input has no Assistants equivalent except "
                    "{'messages': [{'role': ..., 'content': ...}]}; use message= or "
                    f"options (request key {request.key!r})"
                )
            for item in items:
                if not isinstance(item, Mapping) or "content" not in item:
                    raise self._invalid(
                        f"input messages need 'role' and 'content' (request key {request.key!r})"
                    )
                messages.append({"role": item.get("role", "user"), **dict(item)})
        if request.message is not None:
            messages.append({"role": "user", "content": request.message})
        return messages

    def _check_options(self, request: RunRequest, *, new_thread: bool) -> None:
        allowed = RUN_OPTIONS | (THREAD_OPTIONS if new_thread else frozenset())
        unknown = set(request.options) - allowed
        if unknown:
            hint = ""
            if "stream" in unknown:
                hint = " (to stream, use stream_run)"
            elif unknown & THREAD_OPTIONS:
                hint = " (tool_resources belong to the thread: only for a new thread)"
            raise self._invalid(
                f"unknown run option(s) {sorted(unknown)} for request key {request.key!r}; "
                f"allowed: {sorted(allowed)}{hint}"
            )

    def run_payload(
        self,
        request: RunRequest,
        *,
        create_id: str | None = None,
        include_messages: bool = True,
    ) -> dict[str, Any]:
        """The CreateRunRequest body that starts ``request`` on its thread.

        Args:
            request: What to start.
            create_id: The one-off marker put in the run's metadata.
            include_messages: Send the request's messages as ``additional_messages``
                (False when they were put in a thread we just created).

        Returns:
            The JSON body (exposed for tests and dry runs).

        Raises:
            ValidationError: Metadata over OpenAI's limits, or an unknown option.
        """
        self._check_options(request, new_thread=request.thread_id is None)
        metadata = dict(request.metadata)
        if create_id:
            metadata[CREATE_ID_KEY] = create_id
        self.check_metadata(metadata, what="run metadata")
        payload: dict[str, Any] = {"assistant_id": request.assistant_id, "metadata": metadata}
        if request.instructions is not None:
            payload["instructions"] = request.instructions
        options = {k: v for k, v in request.options.items() if k not in THREAD_OPTIONS}
        payload.update(options)
        if include_messages:
            messages = self._user_messages(request)
            if messages:
                payload["additional_messages"] = [
                    *list(options.get("additional_messages") or []),
                    *messages,
                ]
        return payload

    def thread_payload(self, request: RunRequest) -> dict[str, Any]:
        """The CreateThreadRequest body for a request without a thread.

        The thread carries the request's metadata (batch tags included) and its messages.
        """
        metadata = dict(request.metadata)
        self.check_metadata(metadata, what="thread metadata")
        payload: dict[str, Any] = {"metadata": metadata}
        messages = self._user_messages(request)
        if messages:
            payload["messages"] = messages
        if "tool_resources" in request.options:
            payload["tool_resources"] = request.options["tool_resources"]
        return payload

    async def create_thread(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        tool_resources: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a thread (``POST /threads``), retried on transient errors.

        A retry after a lost answer may leave an empty thread behind; it starts no run.

        Args:
            metadata: The thread's metadata (OpenAI's limits are checked first).
            messages: Messages to start the thread with.
            tool_resources: The thread's tool resources.

        Returns:
            The ThreadObject.

        Raises:
            ApiError: The server refused it, or failed after every retry.
            TransportError: No answer after every retry.
        """
        payload: dict[str, Any] = {"metadata": dict(metadata or {})}
        self.check_metadata(payload["metadata"], what="thread metadata")
        if messages:
            payload["messages"] = [dict(m) for m in messages]
        if tool_resources is not None:
            payload["tool_resources"] = dict(tool_resources)
        return await self._create_thread(payload)

    async def _create_thread(self, payload: dict[str, Any]) -> dict[str, Any]:
        # Retried like a read: a duplicate *thread* is an empty orphan that starts no work,
        # so riding out a 5xx or a timeout here is worth more than never leaving one behind.
        body = await self.transport.request_json(
            "POST", "/threads", action="create a thread", mode=RetryMode.IDEMPOTENT, json=payload
        )
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise self._bad_shape("a thread object", body)
        return body

    async def create_run(self, request: RunRequest) -> Run:
        """Start a run on the request's thread, or on a new thread created first.

        Duplicate-safe: after a timeout or a 5xx, the thread's recent runs are searched for
        this create's marker before the request is sent again; a 400 "already has an active
        run run_X" adopts run_X when it carries the marker.

        Args:
            request: What to start.

        Returns:
            The run as the server answered it.

        Raises:
            ValidationError: Bad input (metadata limits, unknown options), before any request.
            BadRequest: The server refused (e.g. the thread has another active run; the
                message names it).
            NotFound: The thread or assistant does not exist.
        """
        create_id = new_create_id()
        new_thread = request.thread_id is None
        payload = self.run_payload(request, create_id=create_id, include_messages=not new_thread)
        if new_thread:
            thread = await self._create_thread(self.thread_payload(request))
            thread_id = str(thread["id"])
        else:
            thread_id = self._check_id(request.thread_id, "thread_id")

        async def lookup() -> Run | None:
            return await self._find_on_thread(thread_id, {CREATE_ID_KEY: create_id}, limit=20)

        async def adopt(exc: BadRequest) -> Run:
            return await self._adopt_active(exc, thread_id, create_id)

        return await self.create_reconciled_run(
            f"/threads/{self.segment(thread_id, 'thread_id')}/runs",
            payload,
            action=self.create_action(request, thread_id),
            lookup=lookup,
            on_bad_request=adopt,
        )

    async def _adopt_active(self, exc: BadRequest, thread_id: str, create_id: str) -> Run:
        """Adopt the active run a 400 names when it is ours; else re-raise with a hint."""
        run_id = active_run_id(exc.message)
        if run_id is None:
            raise exc
        try:
            active = await self.get_run(run_id, thread_id=thread_id)
        except AgentRunsError:
            raise exc from None
        if active.metadata.get(CREATE_ID_KEY) == create_id:
            logger.info(
                "%s: adopted %s, started by an earlier attempt of this create",
                self.backend,
                active.describe(),
            )
            return active
        raise BadRequest(
            f"{exc.message}. Thread {thread_id} is busy with {active.describe()}, which this "
            "create did not start: wait for it (wait_for_run) or cancel it (cancel_run) "
            "before starting another run on this thread, or start the run on a new thread "
            "(thread_id=None)",
            status_code=exc.status_code,
            code=exc.code,
            request_id=exc.request_id,
            backend=self.backend,
            body_snippet=exc.body_snippet,
        ) from exc

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

    def thread_and_run_payload(self, request: RunRequest) -> dict[str, Any]:
        """The CreateThreadAndRunRequest body for ``request`` (exposed for tests)."""
        self._check_options(request, new_thread=True)
        if "additional_messages" in request.options or (
            "additional_instructions" in request.options
        ):
            raise self._invalid(
                "additional_messages / additional_instructions are not accepted when a "
                "thread and run are created in one request; use create_run"
            )
        metadata = dict(request.metadata)
        self.check_metadata(metadata, what="run metadata")
        thread = self.thread_payload(request)
        thread.pop("tool_resources", None)
        payload: dict[str, Any] = {
            "assistant_id": request.assistant_id,
            "thread": thread,
            "metadata": metadata,
        }
        if request.instructions is not None:
            payload["instructions"] = request.instructions
        payload.update(request.options)
        return payload

    # -- read ---------------------------------------------------------------------------

    async def _get_run_response(self, run_id: str, thread_id: str | None) -> httpx.Response:
        return await self.transport.request(
            "GET",
            self._run_path(run_id, thread_id),
            action=f"get run {run_id} on thread {thread_id}",
        )

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        """Read one run.

        Args:
            run_id: The run.
            thread_id: Its thread (required: Assistants runs live on a thread).

        Raises:
            NotFound: No such thread or run (on api.openai.com: the API was retired).
        """
        response = await self._get_run_response(run_id, thread_id)
        return self.to_run(self.transport.decode(response, f"get run {run_id}"))

    def _paged(
        self,
        path: str,
        *,
        action: str,
        convert: Callable[[Any], T],
        item_id: Callable[[T], str],
        limit: int,
        order: Order,
        after: str | None,
        before: str | None,
        extra_params: Mapping[str, Any] | None = None,
    ) -> Callable[[], Awaitable[Page[T]]]:
        """A fetcher of the first page of a cursor-paginated list (wire-contracts §6.5).

        The cursor is the answer's ``last_id`` (``first_id`` when paging with ``before``),
        else the last (first) item's id. Paging stops on ``has_more: false``; when the
        server omits ``has_more``, on a short or empty page; and when a page brings only
        ids already seen (a server whose cursors repeat).
        """
        if not 1 <= limit <= LIST_MAX_LIMIT:
            raise self._invalid(f"limit must be between 1 and {LIST_MAX_LIMIT}, not {limit}")
        if order not in ("asc", "desc"):
            raise self._invalid(f"order must be 'asc' or 'desc', not {order!r}")
        backwards = before is not None and after is None

        async def fetch(cursor: str | None) -> Chunk[T]:
            if cursor is None:
                cursor_after, cursor_before = after, before
            elif backwards:
                cursor_after, cursor_before = None, cursor
            else:
                cursor_after, cursor_before = cursor, None
            params: dict[str, Any] = {
                **dict(extra_params or {}),
                "limit": limit,
                "order": order,
                "after": cursor_after,
                "before": cursor_before,
            }
            body = await self.transport.request_json("GET", path, action=action, params=params)
            data = body.get("data") if isinstance(body, dict) else body
            if not isinstance(data, list):
                raise self._bad_shape("a list", body)
            items = [convert(x) for x in data]
            meta = body if isinstance(body, dict) else {}
            return Chunk(
                items, _next_cursor(meta, items, item_id, limit=limit, backwards=backwards)
            )

        pager = CursorPager(fetch, item_id=item_id, description=f"{self.backend}: {action}")
        return pager.first

    @paged
    async def list_runs(
        self,
        *,
        thread_id: str | None = None,
        limit: int = 20,
        order: Order = "desc",
        after: str | None = None,
        before: str | None = None,
        **filters: Any,
    ) -> Page[Run]:
        """List a thread's runs; the page iterates over the following pages.

        Args:
            thread_id: The thread (required).
            limit: Runs per page (1 to 100).
            order: ``desc`` (newest first, the default) or ``asc``.
            after: Start after this run id (in ``order``).
            before: Page backwards: the runs before this run id (in ``order``).

        Returns:
            The first page.
        """
        if filters:
            raise self._invalid(f"unknown list_runs filter(s) {sorted(filters)}")
        tid = self._check_id(thread_id, "thread_id (Assistants runs are listed per thread)")
        fetch = self._paged(
            f"/threads/{self.segment(tid, 'thread_id')}/runs",
            action=f"list runs of thread {tid}",
            convert=self.to_run,
            item_id=lambda r: r.id,
            limit=limit,
            order=order,
            after=after,
            before=before,
        )
        return await fetch()

    @paged
    async def list_messages(
        self,
        thread_id: str,
        *,
        run_id: str | None = None,
        limit: int = 100,
        order: Order = "asc",
        after: str | None = None,
        before: str | None = None,
    ) -> Page[dict[str, Any]]:
        """List a thread's messages (MessageObjects); the page iterates over the next pages.

        Args:
            thread_id: The thread.
            run_id: Only the messages of this run (the server's filter; some servers
                ignore it, so :meth:`get_result` filters again).
            limit: Messages per page (1 to 100).
            order: ``asc`` (oldest first, the default here) or ``desc``.
            after: Start after this message id.
            before: Page backwards from this message id.
        """
        tid = self._check_id(thread_id, "thread_id")

        def convert(raw: Any) -> dict[str, Any]:
            if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
                raise self._bad_shape("a message object", raw)
            return raw

        fetch = self._paged(
            f"/threads/{self.segment(tid, 'thread_id')}/messages",
            action=f"list messages of thread {tid}",
            convert=convert,
            item_id=lambda m: str(m["id"]),
            limit=limit,
            order=order,
            after=after,
            before=before,
            extra_params={"run_id": run_id},
        )
        return await fetch()

    async def _find_on_thread(
        self, thread_id: str, match: Mapping[str, str], *, limit: int = FIND_SCAN_LIMIT
    ) -> Run | None:
        """The newest of the thread's recent runs whose metadata holds ``match``."""
        runs = self.list_runs(thread_id=thread_id, limit=min(limit, LIST_MAX_LIMIT), order="desc")
        return await first_match(runs, match, limit=limit)

    async def find_run(self, request: RunRequest) -> Run | None:
        """The newest run already started for this batch item on the request's thread.

        Only a request that names its thread can be looked up (there is no thread search
        in the Assistants API); others return None.

        Args:
            request: The item (its metadata carries the batch tags).
        """
        key = request.metadata.get(METADATA_ITEM_KEY)
        batch = request.metadata.get(METADATA_BATCH_KEY)
        if not request.thread_id or key is None or batch is None:
            return None
        tid = self._check_id(request.thread_id, "thread_id")
        return await self._find_on_thread(
            tid, {METADATA_ITEM_KEY: str(key), METADATA_BATCH_KEY: str(batch)}
        )

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
            response = await self._get_run_response(current.id, current.thread_id)
            run = self.to_run(self.transport.decode(response, f"get run {current.id}"))
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

    # -- results ------------------------------------------------------------------------

    async def get_result(self, run: Run) -> ThreadResult:
        """The messages the run wrote to its thread (oldest first) and its last assistant text.

        Reads ``GET /threads/{t}/messages?run_id=<run>&order=asc`` through every page and
        keeps only messages whose ``run_id`` is the run's (some servers ignore the filter).
        """
        if not run.thread_id:
            raise self._invalid(f"{run.describe()} has no thread to read")
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


# -- helpers ----------------------------------------------------------------------------


def _run_error(raw: Mapping[str, Any]) -> str | None:
    last_error = raw.get("last_error")
    if isinstance(last_error, Mapping):
        code, message = last_error.get("code"), last_error.get("message")
        if code and message:
            return f"{code}: {message}"
        return str(message or code or last_error)
    details = raw.get("incomplete_details")
    if isinstance(details, Mapping) and details.get("reason"):
        return f"incomplete: {details['reason']}"
    return None


def tool_calls(run: Run) -> list[dict[str, Any]]:
    """The tool calls a ``requires_action`` run waits for (RunToolCallObjects).

    Args:
        run: The run.
    """
    action = run.raw.get("required_action")
    if not isinstance(action, Mapping):
        return []
    submit = action.get("submit_tool_outputs")
    calls = submit.get("tool_calls") if isinstance(submit, Mapping) else None
    return [dict(c) for c in calls or [] if isinstance(c, Mapping)]


def _tool_name(call: Mapping[str, Any]) -> str:
    function = call.get("function")
    if isinstance(function, Mapping) and function.get("name"):
        return str(function["name"])
    return str(call.get("type") or call.get("id") or "tool")


def _expires_text(run: Run) -> str:
    expires = _timestamp(run.raw.get("expires_at"))
    return f" (it expires at {expires.isoformat()})" if expires else ""


async def _call_handler(handler: ToolHandler, call: dict[str, Any]) -> str:
    result = handler(call)
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, str):
        result = json.dumps(result, default=str)
    return result


def _next_cursor(
    meta: Mapping[str, Any],
    items: Sequence[T],
    item_id: Callable[[T], str],
    *,
    limit: int,
    backwards: bool,
) -> str | None:
    """Where the next page of an Assistants list starts (wire-contracts §6.5), or None.

    The cursor is the answer's ``last_id`` (``first_id`` when paging with ``before``),
    else the last (first) item's id. There is a next page on ``has_more: true``; when the
    server omits ``has_more``, when the page is full.
    """
    if not items:
        return None
    has_more = meta.get("has_more")
    more = bool(has_more) if isinstance(has_more, bool) else len(items) >= limit
    if not more:
        return None
    named = meta.get("first_id") if backwards else meta.get("last_id")
    if isinstance(named, str) and named:
        return named
    return item_id(items[0] if backwards else items[-1])


def _stream_error(backend: str, action: str, data: Any, status: int) -> ApiError:
    error = data.get("error") if isinstance(data, Mapping) else None
    error = error if isinstance(error, Mapping) else data
    message = error.get("message") if isinstance(error, Mapping) else None
    code = error.get("code") or error.get("type") if isinstance(error, Mapping) else None
    text = message or json.dumps(data, default=str)[:300]
    cls: type[ApiError] = RateLimited if code == "rate_limit_exceeded" else ServerError
    return cls(
        f"{backend}: {action}: the stream reported an error: {text}",
        status_code=status,
        code=str(code) if code else None,
        backend=backend,
    )
