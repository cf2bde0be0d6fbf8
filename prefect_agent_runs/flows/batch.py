"""Prefect flows over many remote runs: ``run_batch``, ``create_runs``, ``wait_for_runs``.

A batch of N remote runs costs one Prefect task run (``run-agent-runs``), not N: every
item is a coroutine of :func:`prefect_agent_runs.batch.run_items` in that task's event
loop, and per-item detail goes to logs and artifacts (DESIGN.md, "Batch semantics").

Each flow exists twice, like Prefect's own API (``async def aX`` + sync ``X``):

* ``arun_batch`` / ``acreate_runs`` / ``await_for_runs`` are async flows (deploy and
  ``.serve()`` these);
* ``run_batch`` / ``create_runs`` / ``wait_for_runs`` dispatch on the caller: in async
  code (an async flow, a running event loop) they return the async flow's coroutine, in
  sync code they run a sync flow of the same name to the end.

Cancellation (semantics 3): the item coroutines cancel their own remote run when they are
cancelled; around them a ``try/except BaseException`` (flow cancellation, SIGTERM's
``TerminationSignal``, a crash) cancels every run this flow run created or adopted that is
not terminal, and runs whose create was in flight are looked up and cancelled too. The
``on_cancellation`` / ``on_crashed`` hooks do the same from the persisted ledger and the
server's metadata, for processes that died before they could.

No ``from __future__ import annotations`` in this module: under ``.serve()`` the runner
builds the flows' parameter models from the real annotations, and string annotations
leave them "not fully defined".
"""

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar, cast

import pydantic
from prefect import flow, task
from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger

from prefect_agent_runs.backends.base import batch_tags
from prefect_agent_runs.batch import BatchClient, run_items
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.errors import AgentRunsError, ValidationError
from prefect_agent_runs.flows._artifacts import ProgressReporter, write_final_artifacts
from prefect_agent_runs.flows._hooks import cancel_remote_runs_hook
from prefect_agent_runs.flows._ledger import BatchLedger
from prefect_agent_runs.flows.events import RunEventEmitter
from prefect_agent_runs.flows.progress import notify_progress
from prefect_agent_runs.models import (
    METADATA_BATCH_KEY,
    BatchFailed,
    BatchResult,
    FailOn,
    Run,
    RunOutcome,
    RunRequest,
    RunStatus,
    ThreadResult,
)
from prefect_agent_runs.waiting import PollPolicy

__all__ = [
    "acreate_runs",
    "arun_batch",
    "await_for_runs",
    "create_runs",
    "generate_batch_key",
    "prepare_requests",
    "run_batch",
    "wait_for_runs",
]

T = TypeVar("T")
Mode = Literal["batch", "create", "wait"]
_HOOKS = [cancel_remote_runs_hook]
CONCURRENCY_HEADROOM = 16
"""Connections above ``max_concurrency`` (each waiting item holds one long-poll): creates,
reads and cancels always find a free one."""


def generate_batch_key() -> str:
    """A fresh batch key: ``batch-<yyyymmdd-hhmmss>-<6 hex>`` (UTC)."""
    now = datetime.now(timezone.utc)
    return f"batch-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def prepare_requests(
    requests: Sequence[RunRequest | Mapping[str, Any]],
    batch_key: str,
    flow_run_id: str | None = None,
) -> list[RunRequest]:
    """Validate the items, key them (index when unkeyed) and tag them with the batch.

    Raises:
        ValidationError: An item is not a valid request, or two items share a key.
    """
    out: list[RunRequest] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(requests):
        if isinstance(item, RunRequest):
            request = item
        else:
            try:
                request = RunRequest.model_validate(item)
            except pydantic.ValidationError as exc:
                raise ValidationError(
                    f"batch {batch_key!r}: item {index} is invalid: {exc}"
                ) from None
        key = request.key if request.key is not None else str(index)
        if key in seen:
            raise ValidationError(
                f"batch {batch_key!r}: items {seen[key]} and {index} have the same key {key!r}; "
                "keys must be unique within a batch (nothing was sent)"
            )
        seen[key] = index
        request = request.model_copy(update={"key": key})
        out.append(request.with_metadata(batch_tags(batch_key, key, flow_run_id)))
    return out


def _check_fail_on(fail_on: FailOn) -> None:
    try:
        BatchResult(batch_key="check").should_fail(fail_on)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None


def _logger() -> "logging.Logger | logging.LoggerAdapter[logging.Logger]":
    try:
        return get_run_logger()
    except Exception:
        return logging.getLogger("prefect_agent_runs.flows")


class _TrackingClient:
    """Delegates to the backend client; remembers creates in flight (for cleanup)."""

    def __init__(self, client: Any) -> None:
        self.inner = client
        self.backend = client.backend
        self.creating: dict[str, RunRequest] = {}
        self.created: set[str] = set()

    async def create_run(self, request: RunRequest) -> Run:
        key = str(request.key)
        self.creating[key] = request
        try:
            run = cast(Run, await self.inner.create_run(request))
        except Exception:
            self.creating.pop(key, None)  # refused: nothing was created
            raise
        # a BaseException (cancel, SIGTERM) leaves the key in `creating`: maybe created
        self.creating.pop(key, None)
        self.created.add(key)
        return run

    async def find_run(self, request: RunRequest) -> Run | None:
        return cast("Run | None", await self.inner.find_run(request))

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        return cast(Run, await self.inner.get_run(run_id, thread_id=thread_id))

    async def wait_for_run(self, run: Run | str, **kwargs: Any) -> Run:
        return cast(Run, await self.inner.wait_for_run(run, **kwargs))

    async def get_result(self, run: Run) -> ThreadResult:
        return cast(ThreadResult, await self.inner.get_result(run))

    async def cancel_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        return cast(Run, await self.inner.cancel_run(run_id, thread_id=thread_id))


class _Job:
    """One batch's work inside the task: plain object, so Prefect does not walk it."""

    def __init__(
        self,
        *,
        mode: Mode,
        client: _TrackingClient,
        requests: list[RunRequest],
        known: dict[str, Run],
        policy: PollPolicy,
        max_concurrency: int,
        collect_results: bool,
        ledger: BatchLedger,
        progress: ProgressReporter,
        logger: "logging.Logger | logging.LoggerAdapter[logging.Logger]",
        fresh: bool = False,
    ) -> None:
        self.fresh = fresh
        self.mode = mode
        self.client = client
        self.requests = requests
        self.known = known
        self.policy = policy
        self.max_concurrency = max_concurrency
        self.collect_results = collect_results
        self.ledger = ledger
        self.progress = progress
        self.logger = logger
        self.active: dict[str, Run] = {}
        self.in_process_cancels = 0
        self.events = RunEventEmitter(client.backend, ledger.batch_key)  # docs: Prefect events

    # -- callbacks ----------------------------------------------------------------------

    def on_created(self, key: str, run: Run) -> None:
        self.active[key] = run
        self.events.run_seen(key, run)
        self.ledger.record(key, run)
        if self.mode == "wait":
            return
        how = "created" if key in self.client.created else "re-attached to"
        self.logger.info("item %s: %s %s", key, how, run.describe())

    def on_change(self, key: str, run: Run) -> None:
        if key in self.active:
            self.active[key] = run
        self.events.run_seen(key, run)
        self.logger.debug("item %s: %s", key, run.describe())

    def on_outcome(self, outcome: RunOutcome) -> None:
        self.active.pop(outcome.key, None)
        self.events.outcome(outcome)
        if outcome.run is not None:
            self.ledger.record(outcome.key, outcome.run)
        self.progress.advance()
        notify_progress(outcome, self.progress.done, self.progress.total)
        if outcome.error:
            self.logger.debug("item %s did not complete: %s", outcome.key, outcome.error)

    # -- work ---------------------------------------------------------------------------

    async def run(self) -> list[RunOutcome]:
        try:
            outcomes = await run_items(
                cast(BatchClient, self.client),
                self.requests,
                policy=self.policy,
                max_concurrency=self.max_concurrency,
                collect_results=self.collect_results,
                wait=self.mode != "create",
                resume=True,
                fresh=self.fresh,
                known_runs=self.known,
                on_created=self.on_created,
                on_outcome=self.on_outcome,
                on_change=self.on_change,
            )
        except BaseException as exc:
            await asyncio.shield(self.cancel_started(reason=type(exc).__name__))
            raise
        if self.mode == "create":
            self.active.clear()  # created runs are meant to outlive this flow
        return outcomes

    async def cancel_started(self, *, reason: str) -> None:
        """Cancel every non-terminal run of this flow run, and creates caught in flight."""
        runs = [r for r in self.active.values() if not r.status.is_terminal]
        maybe = list(self.client.creating.values())
        if not runs and not maybe:
            return
        self.logger.warning(
            "batch interrupted (%s): cancelling %d remote run(s) and checking %d create(s) "
            "in flight",
            reason,
            len(runs),
            len(maybe),
        )

        async def cancel(run: Run) -> None:
            try:
                await self.client.cancel_run(run.id, thread_id=run.thread_id)
                self.in_process_cancels += 1
            except AgentRunsError as exc:
                self.logger.error("could not cancel %s: %s", run.describe(), exc)

        async def find_and_cancel(request: RunRequest) -> None:
            try:
                run = await self.client.find_run(request)
            except AgentRunsError:
                return
            if run is not None and not run.status.is_terminal:
                await cancel(run)

        await asyncio.gather(*(cancel(r) for r in runs), *(find_and_cancel(q) for q in maybe))


@task(name="run-agent-runs", cache_policy=NO_CACHE, persist_result=False, retries=0)
async def _run_job(job: _Job) -> list[RunOutcome]:
    """Every item of the batch in one task run (the items are coroutines, not tasks)."""
    return await job.run()


def _resume_hint(batch_key: str, mode: Mode) -> str:
    name = {"batch": "run_batch", "create": "create_runs", "wait": "wait_for_runs"}[mode]
    return (
        f"Run `{name}` again with `batch_key={batch_key!r}` and the same items: items that "
        "already have a run are re-attached to it, never started twice."
    )


async def _execute(
    mode: Mode,
    credentials: AgentRunsCredentials,
    requests: list[RunRequest],
    *,
    batch_key: str,
    generated_key: bool,
    known: dict[str, Run],
    max_concurrency: int,
    timeout_seconds: float | None,
    cancel_on_timeout: bool,
    collect_results: bool,
    fail_on: FailOn,
) -> BatchResult:
    logger = _logger()
    started = time.monotonic()
    flow_run_id = _flow_run_id()
    if generated_key:
        logger.info(
            "batch key %r was generated; pass batch_key=%r to resume this batch",
            batch_key,
            batch_key,
        )
    client = credentials.get_client(
        max_concurrency=max(credentials.max_concurrency, max_concurrency + CONCURRENCY_HEADROOM)
    )
    ledger = await BatchLedger(batch_key).load()
    # The server is asked first (find_run, where the backend can look a key up); the ledger
    # covers the rest. A ledger entry whose run is gone is started again (run_items).
    known = {**ledger.known_runs(credentials.backend), **known}
    await ledger.start(flow_run_id=flow_run_id, credentials=credentials)
    progress = ProgressReporter(batch_key, len(requests))
    await progress.start()
    policy = client.policy.with_overrides(
        timeout_seconds=timeout_seconds, cancel_on_timeout=cancel_on_timeout
    )
    job = _Job(
        mode=mode,
        client=_TrackingClient(client),
        requests=requests,
        known=known,
        policy=policy,
        max_concurrency=max_concurrency,
        collect_results=collect_results,
        ledger=ledger,
        progress=progress,
        logger=logger,
        fresh=generated_key and not known,
    )
    try:
        outcomes = await _run_job.with_options(task_run_name=f"{mode}-{batch_key}")(job)
    finally:
        await asyncio.shield(progress.close())
        await asyncio.shield(ledger.close())
        await asyncio.shield(client.aclose())
    result = BatchResult(batch_key=batch_key, outcomes=outcomes)
    seconds = time.monotonic() - started
    effective_fail_on: FailOn = "never" if mode == "create" else fail_on
    await write_final_artifacts(
        result,
        fail_on=effective_fail_on,
        seconds=seconds,
        resume_hint=_resume_hint(batch_key, mode),
    )
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items()))
    logger.info(
        "batch %r: %d items in %.1f s (%s); %d did not complete",
        batch_key,
        len(result.outcomes),
        seconds,
        counts or "no items",
        len(result.failed),
    )
    if result.should_fail(effective_fail_on):
        raise BatchFailed(result)
    return result


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run the async body from a sync flow: in this thread's own loop when there is none
    (so SIGTERM reaches it), else in Prefect's sync loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from prefect.utilities.asyncutils import run_coro_as_sync

    return cast(T, run_coro_as_sync(coro))


# -- run_batch --------------------------------------------------------------------------


async def _run_batch_body(
    credentials: AgentRunsCredentials,
    requests: Sequence[RunRequest | Mapping[str, Any]],
    batch_key: str | None,
    max_concurrency: int,
    timeout_seconds: float | None,
    cancel_on_timeout: bool,
    collect_results: bool,
    fail_on: FailOn,
) -> BatchResult:
    _check_fail_on(fail_on)
    if max_concurrency < 1:
        raise ValidationError("max_concurrency must be >= 1")
    key = batch_key or generate_batch_key()
    prepared = prepare_requests(requests, key, _flow_run_id())
    return await _execute(
        "batch",
        credentials,
        prepared,
        batch_key=key,
        generated_key=batch_key is None,
        known={},
        max_concurrency=max_concurrency,
        timeout_seconds=timeout_seconds,
        cancel_on_timeout=cancel_on_timeout,
        collect_results=collect_results,
        fail_on=fail_on,
    )


@flow(name="run-batch", on_cancellation=_HOOKS, on_crashed=_HOOKS)  # type: ignore[arg-type]
async def arun_batch(
    credentials: AgentRunsCredentials,
    requests: list[RunRequest | dict[str, Any]],
    batch_key: str | None = None,
    max_concurrency: int = 32,
    timeout_seconds: float | None = None,
    cancel_on_timeout: bool = True,
    collect_results: bool = True,
    fail_on: Literal["never", "any"] | float = "never",
) -> BatchResult:
    """Start, watch and collect many remote runs; resume by ``batch_key`` (async flow).

    Args:
        credentials: A credentials block (``LangGraphCredentials``...).
        requests: The items: ``RunRequest`` or dicts of its fields; an item without ``key``
            is keyed by its index. Keys must be unique.
        batch_key: Names the batch; rerun with the same key to resume it (no item is
            started twice). Generated (``batch-<time>-<hex>``) and logged when omitted.
        max_concurrency: Items in flight at once.
        timeout_seconds: Longest wait for each run (None: no limit).
        cancel_on_timeout: Cancel a run whose wait timed out.
        collect_results: Read what each completed run wrote to its thread.
        fail_on: ``"never"``, ``"any"`` or a ratio: when the flow run fails
            (``BatchFailed``, raised after the artifacts are written).

    Returns:
        One outcome per item, in request order.
    """
    return await _run_batch_body(
        credentials,
        requests,
        batch_key,
        max_concurrency,
        timeout_seconds,
        cancel_on_timeout,
        collect_results,
        fail_on,
    )


@flow(name="run-batch", on_cancellation=_HOOKS, on_crashed=_HOOKS)  # type: ignore[arg-type]
def run_batch_sync(
    credentials: AgentRunsCredentials,
    requests: list[RunRequest | dict[str, Any]],
    batch_key: str | None = None,
    max_concurrency: int = 32,
    timeout_seconds: float | None = None,
    cancel_on_timeout: bool = True,
    collect_results: bool = True,
    fail_on: Literal["never", "any"] | float = "never",
) -> BatchResult:
    """The sync twin of :func:`arun_batch` (same parameters)."""
    return _run_sync(
        _run_batch_body(
            credentials,
            requests,
            batch_key,
            max_concurrency,
            timeout_seconds,
            cancel_on_timeout,
            collect_results,
            fail_on,
        )
    )


# -- create_runs ------------------------------------------------------------------------


async def _create_runs_body(
    credentials: AgentRunsCredentials,
    requests: Sequence[RunRequest | Mapping[str, Any]],
    batch_key: str | None,
    max_concurrency: int,
) -> list[RunOutcome]:
    key = batch_key or generate_batch_key()
    prepared = prepare_requests(requests, key, _flow_run_id())
    result = await _execute(
        "create",
        credentials,
        prepared,
        batch_key=key,
        generated_key=batch_key is None,
        known={},
        max_concurrency=max_concurrency,
        timeout_seconds=None,
        cancel_on_timeout=True,
        collect_results=False,
        fail_on="never",
    )
    return result.outcomes


@flow(name="create-runs", on_cancellation=_HOOKS, on_crashed=_HOOKS)  # type: ignore[arg-type]
async def acreate_runs(
    credentials: AgentRunsCredentials,
    requests: list[RunRequest | dict[str, Any]],
    batch_key: str | None = None,
    max_concurrency: int = 32,
) -> list[RunOutcome]:
    """Start (or find, for a resumed ``batch_key``) one run per item without waiting.

    Returns:
        One outcome per item with its ``run`` (or the ``error`` of a refused create);
        pass them to ``wait_for_runs``.
    """
    return await _create_runs_body(credentials, requests, batch_key, max_concurrency)


@flow(name="create-runs", on_cancellation=_HOOKS, on_crashed=_HOOKS)  # type: ignore[arg-type]
def create_runs_sync(
    credentials: AgentRunsCredentials,
    requests: list[RunRequest | dict[str, Any]],
    batch_key: str | None = None,
    max_concurrency: int = 32,
) -> list[RunOutcome]:
    """The sync twin of :func:`acreate_runs`."""
    return _run_sync(_create_runs_body(credentials, requests, batch_key, max_concurrency))


# -- wait_for_runs ----------------------------------------------------------------------


def _runs_to_wait(
    runs: Sequence[Run | RunOutcome | Mapping[str, Any]],
) -> tuple[list[RunRequest], dict[str, Run], str | None]:
    requests: list[RunRequest] = []
    known: dict[str, Run] = {}
    batch_keys: set[str] = set()
    for index, item in enumerate(runs):
        key: str | None = None
        if isinstance(item, Mapping):
            item = (
                RunOutcome.model_validate(item)
                if "key" in item and "status" not in item
                else Run.model_validate(item)
            )
        if isinstance(item, RunOutcome):
            key = item.key
            if item.run is None:
                raise ValidationError(f"wait_for_runs: item {key!r} has no run ({item.error})")
            run = item.run
        else:
            run = item
        key = key or run.key or str(index)
        if key in known:
            raise ValidationError(f"wait_for_runs: two runs have the key {key!r}")
        if run.metadata.get(METADATA_BATCH_KEY):
            batch_keys.add(str(run.metadata[METADATA_BATCH_KEY]))
        known[key] = run.model_copy(update={"status": RunStatus.UNKNOWN})
        requests.append(RunRequest(assistant_id=run.assistant_id or "unknown", key=key))
    return requests, known, batch_keys.pop() if len(batch_keys) == 1 else None


async def _wait_body(
    credentials: AgentRunsCredentials,
    runs: Sequence[Run | RunOutcome | Mapping[str, Any]],
    batch_key: str | None,
    timeout_seconds: float | None,
    cancel_on_timeout: bool,
    max_concurrency: int,
    collect_results: bool,
    fail_on: FailOn,
) -> BatchResult:
    _check_fail_on(fail_on)
    requests, known, found_key = _runs_to_wait(runs)
    key = batch_key or found_key or generate_batch_key()
    return await _execute(
        "wait",
        credentials,
        requests,
        batch_key=key,
        generated_key=batch_key is None and found_key is None,
        known=known,
        max_concurrency=max_concurrency,
        timeout_seconds=timeout_seconds,
        cancel_on_timeout=cancel_on_timeout,
        collect_results=collect_results,
        fail_on=fail_on,
    )


@flow(name="wait-for-runs", on_cancellation=_HOOKS, on_crashed=_HOOKS)  # type: ignore[arg-type]
async def await_for_runs(
    credentials: AgentRunsCredentials,
    runs: list[Run | RunOutcome | dict[str, Any]],
    timeout_seconds: float | None = None,
    cancel_on_timeout: bool = True,
    max_concurrency: int = 32,
    collect_results: bool = True,
    fail_on: Literal["never", "any"] | float = "never",
    batch_key: str | None = None,
) -> BatchResult:
    """Wait for runs that exist (``Run`` or ``create_runs``' outcomes) and collect them.

    The batch key is taken from the runs' metadata when they share one.
    """
    return await _wait_body(
        credentials,
        runs,
        batch_key,
        timeout_seconds,
        cancel_on_timeout,
        max_concurrency,
        collect_results,
        fail_on,
    )


@flow(name="wait-for-runs", on_cancellation=_HOOKS, on_crashed=_HOOKS)  # type: ignore[arg-type]
def wait_for_runs_sync(
    credentials: AgentRunsCredentials,
    runs: list[Run | RunOutcome | dict[str, Any]],
    timeout_seconds: float | None = None,
    cancel_on_timeout: bool = True,
    max_concurrency: int = 32,
    collect_results: bool = True,
    fail_on: Literal["never", "any"] | float = "never",
    batch_key: str | None = None,
) -> BatchResult:
    """The sync twin of :func:`await_for_runs`."""
    return _run_sync(
        _wait_body(
            credentials,
            runs,
            batch_key,
            timeout_seconds,
            cancel_on_timeout,
            max_concurrency,
            collect_results,
            fail_on,
        )
    )


# -- dispatching names (sync callers run the sync flow; async callers get a coroutine) --

run_batch = async_dispatch(arun_batch)(run_batch_sync)  # type: ignore[arg-type]
"""Run a batch: :func:`arun_batch` (awaitable) in async code, :func:`run_batch_sync` in sync code."""
create_runs = async_dispatch(acreate_runs)(create_runs_sync)  # type: ignore[arg-type]
"""Start runs: :func:`acreate_runs` in async code, :func:`create_runs_sync` in sync code."""
wait_for_runs = async_dispatch(await_for_runs)(wait_for_runs_sync)  # type: ignore[arg-type]
"""Wait for runs: :func:`await_for_runs` in async code, :func:`wait_for_runs_sync` in sync code."""
