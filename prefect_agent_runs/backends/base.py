"""The ``RunsClient`` protocol every backend implements, and the base class of the clients.

A backend is an async client over one :class:`~prefect_agent_runs.http.Transport`. It
knows its wire protocol and nothing of Prefect. What is common to every backend lives
here and in the shared parts next to this module:

* :mod:`.create`: the duplicate-safe create skeleton (:meth:`BaseRunsClient.create_reconciled_run`);
* :mod:`.paging`: ``Page`` / ``PageRequest`` and one pager per paging format;
* :mod:`.sse`: the resumable SSE reader;
* :mod:`.steps`: the wait steps (poll, join, event stream) for :meth:`BaseRunsClient._wait`;
* :mod:`.paths`: ids checked and percent-encoded into paths (:meth:`BaseRunsClient.segment`);
* :mod:`.registry`: name -> backend, read by the CLI, the blocks and the flows.

A client class declares what its backend is: ``backend`` (its name), ``capabilities``
(the optional operations it has; the only way to ask), ``status_map`` (server status
words) and ``error_parser`` (its error bodies, when the shared parser cannot read them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from prefect_agent_runs import timing
from prefect_agent_runs.backends.create import create_reconciled
from prefect_agent_runs.backends.paging import Page, PageRequest, paged
from prefect_agent_runs.backends.paths import path_segment, require_id
from prefect_agent_runs.backends.sse import RunEvent
from prefect_agent_runs.batch import BULK_WATCH, QUEUES_RUNS, WATCH_ON_CREATE
from prefect_agent_runs.errors import BadRequest, NotSupported, ServerError, ValidationError
from prefect_agent_runs.http import ErrorParser, RetryMode, Transport, parse_error_body
from prefect_agent_runs.models import (
    METADATA_BATCH_KEY,
    METADATA_ITEM_KEY,
    Run,
    RunRequest,
    RunStatus,
    ThreadResult,
)
from prefect_agent_runs.responses import redact
from prefect_agent_runs.transient import TRANSIENT_TOLERANCE
from prefect_agent_runs.waiting import Clock, Observation, PollPolicy, Sleep, wait_for_terminal

CREATE_ATTEMPTS = TRANSIENT_TOLERANCE
"""Creates sent at most for one request. Each resend comes only after a lookup window found
nothing (:data:`~prefect_agent_runs.backends.create.LOOKUP_WINDOW_SECONDS`), so a resend
cannot duplicate a create delivered within the window; the tolerance is the transport's."""

__all__ = [
    "BaseRunsClient",
    "Capability",
    "Page",
    "PageRequest",
    "RunEvent",
    "RunsClient",
    "ToolHandler",
    "batch_tags",
    "derived_thread_id",
    "paged",
]

logger = logging.getLogger("prefect_agent_runs.backends")

T = TypeVar("T")

ToolHandler = Callable[[dict[str, Any]], Awaitable[str] | str]
"""Turns one tool call (the server's JSON) into its output string."""


class Capability:
    """Names of the optional operations (``RunsClient.capabilities``)."""

    DELETE = "delete_run"
    STREAM_EVENTS = "stream_events"
    INGEST_EVENTS = "ingest_events"
    JOIN = "join"
    NATIVE_BATCH = "native_batch_create"
    TOOL_OUTPUTS = "submit_tool_outputs"
    FIND_BY_KEY = "find_by_key"
    FIND_BATCH_RUNS = "find_batch_runs"
    CANCEL = "cancel_run"
    LIST_RUNS = "list_runs"
    BULK_WATCH = BULK_WATCH
    """``watch_many``: one request reports on many runs (the batch engine's sweeper)."""
    QUEUES_RUNS = QUEUES_RUNS
    """The server queues every run it accepts: batches leave ``max_active_runs`` unbounded."""
    WATCH_ON_CREATE = WATCH_ON_CREATE
    """``create_and_wait``: the create's own request reports the run's end (a batch watches
    each run on it, with no polls)."""


@runtime_checkable
class RunsClient(Protocol):
    """What every backend offers. Optional operations are named in ``capabilities``."""

    backend: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]

    async def create_run(self, request: RunRequest) -> Run:
        """Start one run (duplicate-safe: see DESIGN.md's retry rules)."""
        ...

    async def create_runs(self, requests: Sequence[RunRequest]) -> list[Run]:
        """Start several runs, in request order."""
        ...

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        """Read one run."""
        ...

    def list_runs(
        self, *, thread_id: str | None = None, limit: int = 20, **filters: Any
    ) -> PageRequest[Run]:
        """List runs: await it for the first page, or iterate it over every page."""
        ...

    async def cancel_run(
        self, run_id: str, *, thread_id: str | None = None, wait: bool = False
    ) -> Run:
        """Cancel a run; safe to repeat and on a finished run."""
        ...

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
        """Wait until the run is terminal; return its last state.

        ``timeout_seconds`` and ``cancel_on_timeout`` override the policy's when not None.
        """
        ...

    async def get_result(self, run: Run) -> ThreadResult:
        """What the run wrote to its thread."""
        ...

    async def find_run(self, request: RunRequest) -> Run | None:
        """The run already started for this request's batch item, if the server can say."""
        ...

    async def aclose(self) -> None:
        """Close the transport."""
        ...


class BaseRunsClient:
    """Shared behaviour of the backends. Subclasses implement the wire calls.

    Args:
        transport: The transport all requests go through.
        policy: Default wait policy.
        clock: Monotonic clock for deadlines (tests inject one).
        sleep: Sleep between observations (tests inject one).
    """

    backend: ClassVar[str] = "base"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    status_map: ClassVar[Mapping[str, RunStatus]] = {}
    """Server status word (lowercase) -> normalized status; a word not here is UNKNOWN."""
    error_parser: ClassVar[ErrorParser | None] = None
    """Reads this server's error bodies (None: the shared parser)."""

    def __init__(
        self,
        transport: Transport,
        *,
        policy: PollPolicy | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.transport = transport
        parser = type(self).error_parser
        if parser is not None and transport.error_parser is parse_error_body:
            transport.error_parser = parser  # the backend's error bodies
        self.policy = policy or PollPolicy()
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.transport.base_url!r})"

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the transport's connection pool."""
        await self.transport.aclose()

    # -- helpers for subclasses -------------------------------------------------------

    def _unsupported(self, operation: str, hint: str = "") -> NotSupported:
        extra = f" {hint}" if hint else ""
        return NotSupported(
            f"{self.backend}: {operation} is not supported by this backend.{extra}",
            backend=self.backend,
        )

    def bad_shape(self, expected: str, got: Any, hint: str = "") -> ServerError:
        """The error for an answer that is not ``expected`` (a run, a thread...).

        The server's answer, not our input: a ``ServerError`` (not transient), whose snippet
        is redacted *before* it is cut (servers and proxies echo request headers, the key
        among them: issue 13).

        Args:
            expected: What the answer should have been ("a run object").
            got: The decoded answer.
            hint: A sentence added to the message (e.g. "Is base_url ...?").
        """
        snippet = redact(json.dumps(got, default=str), self.transport.secrets)[:200]
        extra = f" {hint}" if hint else ""
        return ServerError(
            f"{self.backend}: the server answered something that is not {expected}: "
            f"{snippet}.{extra}",
            status_code=200,
            backend=self.backend,
            body_snippet=snippet,
        )

    def _check_id(self, value: str | None, what: str) -> str:
        """``value`` checked as an id (see :func:`~.paths.require_id`), unchanged."""
        return require_id(value, backend=self.backend, field=what)

    def segment(self, value: str | None, what: str) -> str:
        """``value`` checked as an id and percent-encoded for a path (see :mod:`.paths`).

        Args:
            value: The id.
            what: Which id, for the message (``"thread_id"``).
        """
        return path_segment(value, backend=self.backend, field=what)

    @classmethod
    def normalize(cls, raw_status: str | None) -> RunStatus:
        """The normalized status of a server status word (UNKNOWN when unknown).

        Args:
            raw_status: The server's word.
        """
        if not isinstance(raw_status, str):
            return RunStatus.UNKNOWN
        return cls.status_map.get(raw_status.lower(), RunStatus.UNKNOWN)

    def has(self, capability: str) -> bool:
        """True when this backend has the optional operation ``capability``.

        Args:
            capability: A :class:`Capability` name.
        """
        return capability in self.capabilities

    def to_run(self, raw: Any) -> Run:
        """Normalize the server's JSON for one run (implemented by each backend)."""
        raise self._unsupported("to_run")

    def create_action(self, request: RunRequest, thread_id: str | None) -> str:
        """How a create is named in messages: assistant, thread and item key."""
        action = f"create run of assistant {request.assistant_id!r}"
        if thread_id:
            action += f" on thread {thread_id}"
        if request.key:
            action += f" (key {request.key!r})"
        return action

    async def create_reconciled_run(
        self,
        path: str,
        payload: Any,
        *,
        action: str,
        lookup: Callable[[], Awaitable[Run | None]],
        on_bad_request: Callable[[BadRequest], Awaitable[Run]] | None = None,
        convert: Callable[[Any], Run] | None = None,
    ) -> Run:
        """The create skeleton: POST ``payload`` once, reconcile by ``lookup`` if ambiguous.

        Args:
            path: Where to POST (ids already encoded).
            payload: The JSON body (with the create id in its metadata, for ``lookup``).
            action: The create's name in messages (:meth:`create_action`).
            lookup: Finds the run this create made (:func:`~.create.first_match`).
            on_bad_request: Called with a 400 instead of raising it (adopt an active run).
            convert: Turns the answer into a run (default :meth:`to_run`).

        Returns:
            The run created (or adopted).
        """
        to_run = convert or self.to_run
        if isinstance(payload, Mapping):
            self.check_json_metadata(payload.get("metadata"))

        async def send() -> Run:
            try:
                body = await self.transport.request_json(
                    "POST", path, action=action, mode=RetryMode.CREATE, json=payload
                )
            except BadRequest as exc:
                if on_bad_request is None:
                    raise
                return await on_bad_request(exc)
            return to_run(body)

        run = await create_reconciled(
            send, lookup, backend=self.backend, action=action, **self._create_kwargs()
        )
        if logger.isEnabledFor(logging.DEBUG):  # one line per create: DEBUG (O(1) INFO per batch)
            logger.debug("%s: created %s", self.backend, run.describe())
        return run

    def check_json_metadata(self, metadata: Any, *, what: str = "metadata") -> None:
        """Refuse metadata that JSON cannot carry (a datetime...), naming the key.

        Raises:
            ValidationError: A value is not JSON-serializable (nothing was sent).
        """
        if not isinstance(metadata, Mapping):
            return
        for key, value in metadata.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValidationError(
                    f"{self.backend}: {what} key {key!r} has a {type(value).__name__} value "
                    f"that is not JSON ({exc}); convert it first, e.g. to a string "
                    "(nothing was sent)",
                    backend=self.backend,
                ) from None

    @staticmethod
    def batch_metadata(request: RunRequest) -> dict[str, Any]:
        """The request's metadata, including the batch tags when it has a key."""
        return dict(request.metadata)

    async def _wait(
        self,
        step: Callable[[float | None], Awaitable[Observation]],
        run: Run,
        *,
        policy: PollPolicy,
        on_change: Callable[[Run], Any] | None,
        sleep: Callable[[Sleep], Sleep] | None = None,
        before_cancel: Callable[[], Awaitable[Any]] | None = None,
    ) -> Run:
        """Run the wait engine with ``step``; cancel the remote run on timeout / cancellation.

        Args:
            step: One observation.
            run: The run as last seen.
            policy: Deadline and intervals.
            on_change: Called on each status change.
            sleep: Wraps the sleep between observations (e.g. to wake early when a stream
                reports the end).
            before_cancel: Awaited before the remote run is cancelled (e.g. close the
                stream that holds a connection).
        """
        kwargs: dict[str, Any] = {}
        if self._clock is not None:
            kwargs["clock"] = self._clock
        base_sleep: Sleep = self._sleep or timing.sleep
        if sleep is not None:
            kwargs["sleep"] = sleep(base_sleep)
        elif self._sleep is not None:
            kwargs["sleep"] = self._sleep

        async def cancel() -> Run:
            if before_cancel is not None:
                await before_cancel()
            return await self.cancel_run(run.id, thread_id=run.thread_id)

        return await wait_for_terminal(
            step, run, policy, cancel=cancel, on_change=on_change, **kwargs
        )

    def _create_kwargs(self) -> dict[str, Any]:
        """Arguments of :func:`create_reconciled`: :data:`CREATE_ATTEMPTS` creates at most
        (each after a full lookup window), and the injected sleep (tests)."""
        kwargs: dict[str, Any] = {"max_attempts": CREATE_ATTEMPTS}
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        return kwargs

    def _policy(
        self,
        policy: PollPolicy | None,
        timeout_seconds: float | None,
        cancel_on_timeout: bool | None,
    ) -> PollPolicy:
        base = policy or self.policy
        return base.with_overrides(
            timeout_seconds=timeout_seconds, cancel_on_timeout=cancel_on_timeout
        )

    # -- default implementations ------------------------------------------------------

    async def cancel_run(
        self, run_id: str, *, thread_id: str | None = None, wait: bool = False
    ) -> Run:
        """Cancel a run (implemented by each backend)."""
        raise self._unsupported("cancel_run")

    async def create_run(self, request: RunRequest) -> Run:
        """Start one run (implemented by each backend)."""
        raise self._unsupported("create_run")

    async def create_runs(self, requests: Sequence[RunRequest]) -> list[Run]:
        """Start several runs concurrently (bounded by the transport's ``max_concurrency``).

        Every request is started even if another fails; the first error is raised after
        all have been tried, with the runs that were created available on it as
        ``created`` (a list aligned with ``requests``, None where nothing was created).
        """
        results = await asyncio.gather(
            *(self.create_run(r) for r in requests), return_exceptions=True
        )
        runs: list[Run] = []
        first_error: BaseException | None = None
        for result in results:
            if isinstance(result, BaseException):
                first_error = first_error or result
            else:
                runs.append(result)
        if first_error is not None:
            first_error.created = [r if isinstance(r, Run) else None for r in results]  # type: ignore[attr-defined]
            raise first_error
        return runs

    async def find_run(self, request: RunRequest) -> Run | None:
        """The run already started for this batch item; None when the server cannot say."""
        return None

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        """Read one run (implemented by each backend)."""
        raise self._unsupported("get_run")

    @paged
    async def list_runs(
        self, *, thread_id: str | None = None, limit: int = 20, **filters: Any
    ) -> Page[Run]:
        """List runs (implemented by each backend)."""
        raise self._unsupported("list_runs")

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
        """Wait for a terminal state (implemented by each backend)."""
        raise self._unsupported("wait_for_run")

    async def get_result(self, run: Run) -> ThreadResult:
        """What the run wrote to its thread (implemented by each backend)."""
        raise self._unsupported("get_result")

    async def delete_run(self, run_id: str, *, thread_id: str | None = None) -> None:
        """Delete a run (capability ``delete_run``)."""
        raise self._unsupported("delete_run")

    def stream_events(self, run: Run, **options: Any) -> AsyncIterator[RunEvent]:
        """Stream a run's events (capability ``stream_events``)."""
        raise self._unsupported("stream_events")

    async def ingest_events(self, run_id: str, events: Sequence[Mapping[str, Any]]) -> Any:
        """Send events into a run's log (capability ``ingest_events``)."""
        raise self._unsupported("ingest_events")

    async def find_batch_runs(self, batch_key: str) -> list[Run]:
        """Every run tagged with ``batch_key``, found on the server (capability
        ``find_batch_runs``)."""
        raise self._unsupported("find_batch_runs")

    async def join(self, run: Run) -> Any:
        """Block until the run ends, server side (capability ``join``)."""
        raise self._unsupported("join")


def derived_thread_id(batch_key: str, key: str) -> str:
    """A stable thread id for one batch item: uuid5 of (batch_key, key).

    Rerunning the batch gives the same id, so "was this item already started?" is one
    lookup on servers that accept client-chosen thread ids (LangGraph).
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"prefect-agent-runs:{batch_key}:{key}"))


def batch_tags(batch_key: str, key: str, flow_run_id: str | None = None) -> dict[str, str]:
    """The metadata every batch run carries (DESIGN.md, batch semantics 1)."""
    from prefect_agent_runs.models import METADATA_FLOW_RUN_ID

    tags = {METADATA_BATCH_KEY: batch_key, METADATA_ITEM_KEY: key}
    if flow_run_id:
        tags[METADATA_FLOW_RUN_ID] = flow_run_id
    return tags
