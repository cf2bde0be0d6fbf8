"""The body shared by the batch flows: one task run over the engine, the ledger, the report.

A batch of N remote runs costs one Prefect task run (``run-agent-runs``), not N: every item
goes through :func:`prefect_agent_runs.batch.run_items` in that task's event loop. Per-item
detail goes to DEBUG logs and the artifacts; a batch writes O(1) INFO records plus one
WARNING per failed item (at most :data:`MAX_ITEM_WARNINGS`), on the task run.

Cancellation (semantics 3): around the engine a ``try/except BaseException`` (flow
cancellation, SIGTERM's ``TerminationSignal``, a crash) cancels every run this flow run
created or adopted that is not terminal, and looks up runs whose create was in flight.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, cast

import pydantic
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient, get_client
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger

from prefect_agent_runs._signals import stoppable
from prefect_agent_runs.backends import registry
from prefect_agent_runs.backends.base import batch_tags
from prefect_agent_runs.batch import (
    DEFAULT,
    WATCH_ON_CREATE,
    BatchClient,
    default_max_active_runs,
    run_items,
)
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.errors import AgentRunsError, NotSupported, ValidationError
from prefect_agent_runs.flows._artifacts import (
    ProgressReporter,
    counts_message,
    short_error,
    write_final_artifacts,
)
from prefect_agent_runs.flows._ledger import BatchLedger
from prefect_agent_runs.flows.events import EventLevel, RunEventEmitter
from prefect_agent_runs.flows.progress import notify_progress
from prefect_agent_runs.models import BatchFailed, BatchResult, FailOn, Run, RunOutcome, RunRequest

__all__ = ["Mode", "check_fail_on", "execute", "flow_run_id", "generate_batch_key"]

Mode = Literal["batch", "create", "wait"]
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
CONCURRENCY_HEADROOM = 16
"""Connections above ``max_concurrency`` (each watched item may hold one long-poll):
creates, reads and cancels always find a free one."""


MAX_ITEM_WARNINGS = 100
"""WARNING lines for failed items per batch; the rest are counted in one line."""


def connections_needed(
    credentials: AgentRunsCredentials, mode: Mode, max_concurrency: int, max_active_runs: Any
) -> int:
    """Connections a batch's client needs: its requests in flight, plus one open stream per
    run alive where the backend watches each run on its create (``watch_on_create``)."""
    connections = max_concurrency + CONCURRENCY_HEADROOM
    try:
        capabilities = registry.get(credentials.backend).capabilities
    except NotSupported:
        capabilities = frozenset()  # get_client says so, naming the registered backends
    if mode == "batch" and WATCH_ON_CREATE in capabilities:
        active = (
            default_max_active_runs(capabilities) if max_active_runs is DEFAULT else max_active_runs
        )
        connections += active or 0
    return max(credentials.max_concurrency, connections)


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


def check_fail_on(fail_on: FailOn) -> None:
    """Refuse a ``fail_on`` that is not ``"never"``, ``"any"`` or a ratio in [0, 1]."""
    try:
        BatchResult(batch_key="check").should_fail(fail_on)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def flow_run_id() -> str | None:
    """The id of the flow run this code runs in, if any."""
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None


def _logger() -> Logger:
    try:
        return get_run_logger()
    except Exception:
        return logging.getLogger("prefect_agent_runs.flows")


class _TrackingClient:
    """Delegates to the backend client; remembers creates in flight (for cleanup)."""

    def __init__(self, client: Any) -> None:
        self.inner = client
        self.backend = client.backend
        self.capabilities: frozenset[str] = getattr(client, "capabilities", frozenset())
        self.creating: dict[str, RunRequest] = {}
        self.created: set[str] = set()
        if hasattr(client, "watch_many"):
            self.watch_many = client.watch_many
        if WATCH_ON_CREATE in self.capabilities:
            self.create_and_wait = self._create_and_wait

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

    async def _create_and_wait(
        self, request: RunRequest, *, on_created: Callable[[Run], Any] | None = None, **kwargs: Any
    ) -> Run:
        key = str(request.key)
        self.creating[key] = request

        async def created(run: Run) -> None:
            self.creating.pop(key, None)
            self.created.add(key)
            if on_created is not None:
                answer = on_created(run)
                if inspect.isawaitable(answer):
                    await answer

        try:
            return cast(
                Run, await self.inner.create_and_wait(request, on_created=created, **kwargs)
            )
        except Exception:
            if key not in self.created:
                self.creating.pop(key, None)  # refused: nothing was created
            raise

    async def find_run(self, request: RunRequest) -> Run | None:
        return cast("Run | None", await self.inner.find_run(request))

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        return cast(Run, await self.inner.get_run(run_id, thread_id=thread_id))

    async def wait_for_run(self, run: Run | str, **kwargs: Any) -> Run:
        return cast(Run, await self.inner.wait_for_run(run, **kwargs))

    async def get_result(self, run: Run) -> Any:
        return await self.inner.get_result(run)

    async def cancel_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        return cast(Run, await self.inner.cancel_run(run_id, thread_id=thread_id))


class _Job:
    """One batch's work inside the task: plain object, so Prefect does not walk it."""

    def __init__(
        self,
        *,
        mode: Mode,
        client: _TrackingClient,
        requests: AsyncIterator[RunRequest] | Sequence[RunRequest],
        known: dict[str, Run],
        policy: Any,
        max_concurrency: int,
        max_active_runs: int | None,
        collect_results: bool,
        ledger: BatchLedger,
        progress: ProgressReporter,
        logger: Logger,
        events: RunEventEmitter,
        fresh: bool = False,
    ) -> None:
        self.fresh = fresh
        self.events = events  # docs: Prefect events
        self.mode = mode
        self.client = client
        self.requests = requests
        self.known = known
        self.policy = policy
        self.max_concurrency = max_concurrency
        self.max_active_runs = max_active_runs
        self.collect_results = collect_results
        self.ledger = ledger
        self.progress = progress
        self.logger = logger
        self.active: dict[str, Run] = {}
        self.warnings = 0

    async def on_creating(self, key: str, request: RunRequest) -> None:
        await self.ledger.creating(key)

    async def on_created(self, key: str, run: Run) -> None:
        self.active[key] = run
        self.events.run_seen(key, run)
        await self.ledger.created(key, run)
        if self.mode != "wait":
            how = "created" if key in self.client.created else "re-attached to"
            self.logger.debug("item %s: %s %s", key, how, run.describe())

    def on_change(self, key: str, run: Run) -> None:
        if key in self.active:
            self.active[key] = run
        self.events.run_seen(key, run)
        self.ledger.record(key, run)
        self.logger.debug("item %s: %s", key, run.describe())

    def on_outcome(self, outcome: RunOutcome) -> None:
        self.active.pop(outcome.key, None)
        self.events.outcome(outcome)
        if outcome.run is not None:
            self.ledger.record(outcome.key, outcome.run)
        elif outcome.attempts:
            self.ledger.refused(outcome.key)
        self.progress.advance(status=outcome.status.value if outcome.run else "not created")
        notify_progress(outcome, self.progress.done, self.progress.total)
        if outcome.error:
            self.warnings += 1
            if self.warnings <= MAX_ITEM_WARNINGS:
                self.logger.warning("item %s: %s", outcome.key, short_error(outcome))
            self.logger.debug("item %s did not complete: %s", outcome.key, outcome.error)

    async def run(self) -> list[RunOutcome]:
        try:
            outcomes = await run_items(
                cast(BatchClient, self.client),
                self.requests,
                policy=self.policy,
                max_concurrency=self.max_concurrency,
                max_active_runs=self.max_active_runs,
                collect_results=self.collect_results,
                wait=self.mode != "create",
                resume=True,
                fresh=self.fresh,
                known_runs=self.known,
                on_creating=self.on_creating,
                on_created=self.on_created,
                on_outcome=self.on_outcome,
                on_change=self.on_change,
            )
        except BaseException as exc:
            await asyncio.shield(self.cancel_started(reason=type(exc).__name__))
            raise
        if self.warnings > MAX_ITEM_WARNINGS:
            self.logger.warning(
                "%d more items did not complete (see the table artifact and DEBUG logs)",
                self.warnings - MAX_ITEM_WARNINGS,
            )
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
        slots = asyncio.Semaphore(self.max_concurrency)

        async def cancel(run: Run) -> None:
            async with slots:
                try:
                    await self.client.cancel_run(run.id, thread_id=run.thread_id)
                except AgentRunsError as exc:
                    self.logger.error("could not cancel %s: %s", run.describe(), exc)

        async def find_and_cancel(request: RunRequest) -> None:
            try:
                async with slots:
                    run = await self.client.find_run(request)
            except AgentRunsError:
                return
            if run is not None and not run.status.is_terminal:
                await cancel(run)

        await asyncio.gather(*(cancel(r) for r in runs), *(find_and_cancel(q) for q in maybe))


@task(name="run-agent-runs", cache_policy=NO_CACHE, persist_result=False, retries=0)
async def _run_job(job: _Job) -> list[RunOutcome]:
    """Every item of the batch in one task run (the items are coroutines, not tasks)."""
    job.logger = _logger()  # the task run's logger: item lines sit on the task run
    return await job.run()


def _run_name(mode: Mode, batch_key: str) -> str:
    return batch_key if mode == "batch" else f"{mode}-{batch_key}"


def _resume_hint(batch_key: str, mode: Mode) -> str:
    name = {"batch": "run_batch", "create": "create_runs", "wait": "wait_for_runs"}[mode]
    return (
        f"Run `{name}` again with `batch_key={batch_key!r}` and the same items: items that "
        "already have a run are re-attached to it, never started twice."
    )


async def _name_flow_run(api: PrefectClient, mode: Mode, batch_key: str, logger: Logger) -> None:
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    tags = sorted({*(ctx.flow_run.tags or []), f"batch:{batch_key}", "prefect-agent-runs"})
    try:
        await api.update_flow_run(ctx.flow_run.id, name=_run_name(mode, batch_key), tags=tags)
    except Exception as exc:
        logger.debug("could not name the flow run after the batch: %s", exc)


@stoppable
async def execute(
    mode: Mode,
    credentials: AgentRunsCredentials,
    requests: AsyncIterator[RunRequest] | Sequence[RunRequest],
    *,
    total: int,
    batch_key: str,
    generated_key: bool,
    known: dict[str, Run],
    max_concurrency: int,
    max_active_runs: Any = DEFAULT,
    timeout_seconds: float | None,
    cancel_on_timeout: bool,
    collect_results: bool,
    fail_on: FailOn,
    events: EventLevel = "failures",
) -> tuple[BatchResult, str]:
    """Run a batch: ledger, progress, the engine in one task run, artifacts, fail_on.

    Returns:
        The result and the state message (``"54 completed, 6 failed"``).

    Raises:
        BatchFailed: The batch tripped ``fail_on`` (after the artifacts were written).
        LedgerUnreadable: An earlier attempt's ledger cannot be read.
    """
    emitter = RunEventEmitter(credentials.backend, batch_key, events)  # checks the level
    logger = _logger()
    started = time.monotonic()
    run_id = flow_run_id()
    if max_active_runs == "default":
        max_active_runs = DEFAULT
    if generated_key:
        logger.info(
            "batch key %r was generated; pass batch_key=%r to resume this batch",
            batch_key,
            batch_key,
        )
    ledger = await BatchLedger(batch_key).load()
    if ledger.in_flight:
        logger.warning(
            "batch %r: %d create(s) were in flight when an earlier attempt stopped; where the "
            "server cannot be asked by key, each may have made one duplicate run",
            batch_key,
            len(ledger.in_flight),
        )
    # The server is asked first (find_run, where the backend can look a key up); the ledger
    # covers the rest. A ledger entry whose run is gone is started again (run_items).
    known = {**ledger.known_runs(credentials.backend), **known}
    await ledger.start(flow_run_id=run_id, credentials=credentials)
    if ledger.credentials is None:
        logger.warning(
            "batch %r: the credentials are an unsaved block with an inline secret; a crashed "
            "or cancelled flow run can only cancel its runs in process (save the block, or "
            "take the key from an environment variable, to let the hooks cancel them too)",
            batch_key,
        )
    client = credentials.get_client(
        max_concurrency=connections_needed(credentials, mode, max_concurrency, max_active_runs)
    )
    policy = client.policy.with_overrides(
        timeout_seconds=timeout_seconds, cancel_on_timeout=cancel_on_timeout
    )
    progress = ProgressReporter(batch_key, total)
    async with get_client() as api:
        await _name_flow_run(api, mode, batch_key, logger)
        await progress.start(api)
        job = _Job(
            mode=mode,
            client=_TrackingClient(client),
            requests=requests,
            known=known,
            policy=policy,
            max_concurrency=max_concurrency,
            max_active_runs=max_active_runs,
            collect_results=collect_results,
            ledger=ledger,
            progress=progress,
            logger=logger,
            events=emitter,
            fresh=generated_key and not known,
        )
        try:
            outcomes = await _run_job.with_options(task_run_name=_run_name(mode, batch_key))(job)
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
    message = counts_message(result)
    logger.info(
        "batch %r: %d items in %.1f s (%s); %d did not complete",
        batch_key,
        len(result.outcomes),
        seconds,
        message,
        len(result.failed),
    )
    if result.should_fail(effective_fail_on):
        raise BatchFailed(result)
    return result, message
