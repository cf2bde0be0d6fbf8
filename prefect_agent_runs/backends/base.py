"""The ``RunsClient`` protocol every backend implements, its ``Page`` and a base class.

A backend is an async client over one :class:`~prefect_agent_runs.http.Transport`. It
knows its wire protocol and nothing of Prefect. What is common to every backend lives
here: waiting (through :mod:`prefect_agent_runs.waiting`), concurrent ``create_runs``,
``NotSupported`` for capabilities a platform lacks, and the batch-metadata helpers.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any, ClassVar, Generic, ParamSpec, Protocol, TypeVar, runtime_checkable

from prefect_agent_runs.errors import NotSupported, ValidationError
from prefect_agent_runs.http import Transport
from prefect_agent_runs.models import (
    METADATA_BATCH_KEY,
    METADATA_ITEM_KEY,
    Run,
    RunRequest,
    ThreadResult,
)
from prefect_agent_runs.waiting import Clock, Observation, PollPolicy, Sleep, wait_for_terminal

__all__ = [
    "BaseRunsClient",
    "Capability",
    "Page",
    "PageRequest",
    "RunEvent",
    "RunsClient",
    "ToolHandler",
    "paged",
]

T = TypeVar("T")
P = ParamSpec("P")

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


class RunEvent(dict[str, Any]):
    """One event of a run's stream: ``event``, ``data`` and ``id`` (when the server sent one)."""

    @property
    def event(self) -> str:
        """The event name."""
        return str(self.get("event", ""))

    @property
    def id(self) -> str | None:
        """The event id, used to resume a stream (``Last-Event-ID``)."""
        value = self.get("id")
        return str(value) if value not in (None, "") else None

    @property
    def data(self) -> Any:
        """The decoded data."""
        return self.get("data")


class Page(Generic[T]):
    """One page of a list; async-iterable over every item of every following page.

    Args:
        items: The items of this page.
        fetch_next: Fetches the next page, or None when this is the last one.
    """

    def __init__(
        self,
        items: Sequence[T],
        fetch_next: Callable[[], Awaitable[Page[T]]] | None,
    ) -> None:
        self.items: list[T] = list(items)
        self._fetch_next = fetch_next

    def __repr__(self) -> str:
        return f"Page(items={len(self.items)}, has_next_page={self.has_next_page()})"

    def has_next_page(self) -> bool:
        """True when another page may follow."""
        return self._fetch_next is not None

    async def next_page(self) -> Page[T]:
        """Fetch the next page (the seed's ``next()``).

        Raises:
            StopAsyncIteration: There is no next page.
        """
        if self._fetch_next is None:
            raise StopAsyncIteration("no next page")
        return await self._fetch_next()

    async def iter_pages(self) -> AsyncIterator[Page[T]]:
        """This page, then each following page."""
        page: Page[T] = self
        while True:
            yield page
            if not page.has_next_page():
                return
            page = await page.next_page()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.iter_pages():
            for item in page.items:
                yield item

    async def get_all(self, *, max_items: int | None = None) -> list[T]:
        """Every item from this page on (the seed's ``getAll()``).

        Args:
            max_items: Stop after this many items.
        """
        out: list[T] = []
        async for item in self:
            out.append(item)
            if max_items is not None and len(out) >= max_items:
                break
        return out


class PageRequest(Generic[T]):
    """A list call not yet sent: ``await`` it for the first :class:`Page`, or iterate it.

    Like the seeds' ``PagePromise``: ``async for run in client.list_runs(...)`` walks every
    page, ``await client.list_runs(...)`` gives the first page, and
    ``await client.list_runs(...).get_all()`` reads them all.
    """

    def __init__(self, fetch_first: Callable[[], Awaitable[Page[T]]]) -> None:
        self._fetch_first = fetch_first

    def __await__(self) -> Generator[Any, None, Page[T]]:
        return self._fetch_first().__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self._fetch_first()
        async for item in page:
            yield item

    async def get_all(self, *, max_items: int | None = None) -> list[T]:
        """Every item of every page (see :meth:`Page.get_all`)."""
        page = await self._fetch_first()
        return await page.get_all(max_items=max_items)


def paged(fn: Callable[P, Awaitable[Page[T]]]) -> Callable[P, PageRequest[T]]:
    """Turn ``async def list_x(...) -> Page`` into ``def list_x(...) -> PageRequest``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> PageRequest[T]:
        return PageRequest(lambda: fn(*args, **kwargs))

    return wrapper


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

    def __init__(
        self,
        transport: Transport,
        *,
        policy: PollPolicy | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.transport = transport
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

    def _check_id(self, value: str | None, what: str) -> str:
        if not value or not isinstance(value, str):
            raise ValidationError(f"{self.backend}: {what} is required", backend=self.backend)
        if "/" in value or "?" in value or "#" in value or value.strip() != value:
            raise ValidationError(
                f"{self.backend}: {what} {value!r} is not a valid id (it contains '/', '?', "
                "'#' or surrounding spaces)",
                backend=self.backend,
            )
        return value

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
    ) -> Run:
        kwargs: dict[str, Any] = {}
        if self._clock is not None:
            kwargs["clock"] = self._clock
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep

        async def cancel() -> Run:
            return await self.cancel_run(run.id, thread_id=run.thread_id)

        return await wait_for_terminal(
            step, run, policy, cancel=cancel, on_change=on_change, **kwargs
        )

    def _create_kwargs(self) -> dict[str, Any]:
        """Arguments of :func:`create_reconciled`: as many creates as the transport's
        ``max_retries`` allows (at least 3), and the injected sleep (tests)."""
        kwargs: dict[str, Any] = {
            "max_attempts": max(3, self.transport.retry_policy.max_retries + 1)
        }
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
