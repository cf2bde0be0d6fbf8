"""The Assistants client's base: transport, mapping, creates, reads and lists."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import httpx

from prefect_agent_runs.backends.base import (
    BaseRunsClient,
    Capability,
    Page,
    paged,
)
from prefect_agent_runs.backends.create import CREATE_ID_KEY, first_match, new_create_id
from prefect_agent_runs.backends.openai_assistants.payloads import (
    FIND_SCAN_LIMIT,
    LIST_MAX_LIMIT,
    AssistantsPayloads,
    _timestamp,
    active_run_id,
)
from prefect_agent_runs.backends.openai_assistants.wire import _next_cursor, _run_error
from prefect_agent_runs.backends.paging import Chunk, CursorPager
from prefect_agent_runs.errors import (
    AgentRunsError,
    ApiError,
    BadRequest,
    NotFound,
    ServerError,
)
from prefect_agent_runs.http import RetryMode, Transport
from prefect_agent_runs.models import (
    METADATA_BATCH_KEY,
    METADATA_ITEM_KEY,
    Run,
    RunRequest,
    RunStatus,
)
from prefect_agent_runs.responses import redact
from prefect_agent_runs.transient import TRANSIENT_TOLERANCE
from prefect_agent_runs.waiting import Clock, PollPolicy, Sleep

__all__ = ["DEFAULT_BASE_URL", "RETIRED_MESSAGE", "STATUS_MAP", "AssistantsCore"]

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

Order = Literal["asc", "desc"]


class AssistantsCore(AssistantsPayloads, BaseRunsClient):
    """Transport, mapping, creates, reads and lists of :class:`~.client.AssistantsClient`."""

    capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            Capability.STREAM_EVENTS,
            Capability.TOOL_OUTPUTS,
            Capability.CANCEL,
            Capability.LIST_RUNS,
            Capability.WATCH_ON_CREATE,
        }
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
        max_retries: int = TRANSIENT_TOLERANCE,
        max_concurrency: int = 32,
        policy: PollPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        verify_tls: bool = True,
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
            verify_tls=verify_tls,
            sleep=sleep,
            error_hook=self._retired_hook,
        )
        super().__init__(transport, policy=policy, clock=clock, sleep=sleep)
        self._captured: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        """Messages of ended runs that a create's stream carried, until ``get_result``."""

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
        # redacted before cutting: servers and proxies echo request headers (issue 13)
        snippet = redact(json.dumps(got, default=str), self.transport.secrets)[:200]
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
        # Retried like a read. create_run sends a *bare* thread here (no metadata, no
        # messages: those travel with the run), so a retry after a lost answer leaves at
        # worst an empty, untagged thread that holds nothing and starts nothing (issue 13,
        # D4: a tagged thread with no run is never left behind). The API has no way to
        # find such a thread again, so an item cannot be made without this risk.
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
        thread_id, payload, create_id = await self._prepare_create(request)

        async def lookup() -> Run | None:
            return await self._find_created(thread_id, create_id)

        async def adopt(exc: BadRequest) -> Run:
            return await self._adopt_active(exc, thread_id, create_id)

        return await self.create_reconciled_run(
            self._runs_path(thread_id),
            payload,
            action=self.create_action(request, thread_id),
            lookup=lookup,
            on_bad_request=adopt,
        )

    async def _prepare_create(self, request: RunRequest) -> tuple[str, dict[str, Any], str]:
        """Check the request, create its bare thread if it has none: (thread, body, marker).

        Everything is checked before the thread is created (nothing is sent for bad input).
        """
        create_id = new_create_id()
        new_thread = request.thread_id is None
        payload = self.run_payload(request, create_id=create_id, include_messages=True)
        self.check_json_metadata(payload.get("metadata"))
        if new_thread:
            if not payload.get("additional_messages"):
                raise self._invalid(
                    f"request key {request.key!r} has neither message nor input: a run on a "
                    "new, empty thread has nothing to answer (nothing was sent)"
                )
            bare: dict[str, Any] = {}
            if "tool_resources" in request.options:
                bare["tool_resources"] = request.options["tool_resources"]
            thread = await self._create_thread(bare)
            thread_id = str(thread["id"])
        else:
            thread_id = self._check_id(request.thread_id, "thread_id")
        return thread_id, payload, create_id

    def _runs_path(self, thread_id: str) -> str:
        return f"/threads/{self.segment(thread_id, 'thread_id')}/runs"

    async def _find_created(self, thread_id: str, create_id: str) -> Run | None:
        """The run a create with marker ``create_id`` started on the thread, if any."""
        return await self._find_on_thread(thread_id, {CREATE_ID_KEY: create_id}, limit=20)

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

    # -- read ---------------------------------------------------------------------------

    async def _get_run_response(
        self, run_id: str, thread_id: str | None
    ) -> tuple[httpx.Response, Any]:
        """The answer (for its poll hint) and its JSON, decoded inside the retry loop."""
        response, body = await self.transport.request(
            "GET",
            self._run_path(run_id, thread_id),
            action=f"get run {run_id} on thread {thread_id}",
            decode=True,
        )
        return response, body

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        """Read one run.

        Args:
            run_id: The run.
            thread_id: Its thread (required: Assistants runs live on a thread).

        Raises:
            NotFound: No such thread or run (on api.openai.com: the API was retired).
        """
        _, body = await self._get_run_response(run_id, thread_id)
        return self.to_run(body)

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
