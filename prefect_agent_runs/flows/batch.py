"""Prefect flows over many remote runs: ``run_batch``, ``create_runs``, ``wait_for_runs``.

A batch of N remote runs costs one Prefect task run (``run-agent-runs``), not N (see
:mod:`prefect_agent_runs.flows._execute`). Its items are never flow-run parameters: the
flows take an :class:`~prefect_agent_runs.flows.sources.ItemsSource` (a JSONL/CSV path or
URL, or items stored once in the result storage), and calling a flow with a list stores the
list first (:class:`~prefect_agent_runs.flows.sources.BatchFlow`).

Each flow exists twice, like Prefect's own API (``async def aX`` + sync ``X``):

* ``arun_batch`` / ``acreate_runs`` / ``await_for_runs`` are async flows (deploy and
  ``.serve()`` these);
* ``run_batch`` / ``create_runs`` / ``wait_for_runs`` dispatch on the caller: in async
  code (an async flow, a running event loop) they return the async flow's coroutine, in
  sync code they run a sync flow of the same name to the end.

The flow run is named ``<mode>-<batch key>``, tagged ``batch:<batch key>``, and its final
state message counts the outcomes (``"54 completed, 6 failed"``).

No ``from __future__ import annotations`` in this module: under ``.serve()`` the runner
builds the flows' parameter models from the real annotations, and string annotations
leave them "not fully defined".
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast

from prefect import flow
from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.client.schemas.objects import State
from prefect.states import Completed

from prefect_agent_runs.batch import DEFAULT
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.errors import ValidationError
from prefect_agent_runs.flows._execute import (
    check_fail_on,
    execute,
    flow_run_id,
    generate_batch_key,
    prepare_requests,
)
from prefect_agent_runs.flows._hooks import cancel_remote_runs_hook
from prefect_agent_runs.flows.events import EventLevel
from prefect_agent_runs.flows.sources import (
    BatchFlow,
    ItemsSource,
    as_source,
    check_source,
    iter_tagged,
    open_items,
)
from prefect_agent_runs.models import (
    METADATA_BATCH_KEY,
    BatchResult,
    FailOn,
    Run,
    RunOutcome,
    RunRequest,
    RunStatus,
)

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
_HOOKS = [cancel_remote_runs_hook]
Items = ItemsSource | str | list[RunRequest | dict[str, Any]]
"""A batch's ``requests``: a source (or its path/URL), or a list (stored before the run)."""


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run the async body from a sync flow: in this thread's own loop when there is none
    (so SIGTERM reaches it), else in Prefect's sync loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from prefect.utilities.asyncutils import run_coro_as_sync

    return cast(T, run_coro_as_sync(coro))


def _check(max_concurrency: int, max_active_runs: int | None, timeout: float | None) -> None:
    if max_concurrency < 1:
        raise ValidationError("max_concurrency must be >= 1")
    if max_active_runs is not None and max_active_runs != DEFAULT and max_active_runs < 1:
        raise ValidationError("max_active_runs must be >= 1 or None")
    if timeout is not None and timeout < 0:
        raise ValidationError(f"timeout_seconds must be >= 0 or None, not {timeout!r}")


async def _items(
    requests: Any, batch_key: str
) -> tuple[AsyncIterator[RunRequest] | list[RunRequest], int]:
    """The tagged items (streamed from a source) and their number."""
    run_id = flow_run_id()
    source = as_source(requests)
    if source is None:
        prepared = prepare_requests(list(requests), batch_key, run_id)
        return prepared, len(prepared)
    if source.storage == "result" and source.count is not None:
        total = source.count  # checked when it was stored
    else:
        total = await check_source(source)
    return iter_tagged(open_items(source), batch_key, run_id), total


class _ResultState(State):  # type: ignore[type-arg]
    """The batch flow's final state: Prefect does not walk its result.

    On return, Prefect's flow engine walks the returned value for futures
    (``resolve_futures_to_states``): every field of every outcome, its run's raw JSON and
    its messages. At 10,000 items that walk cost 7.8 s of CPU and 137 MB of transient
    memory, for a result that holds no future. ``visit_collection`` reads a model's fields
    through ``dict(model)``, so this state hides its ``data`` from that iteration only;
    attribute access, ``model_dump``, pickling and the API see it as usual.
    """

    def __iter__(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        return ((name, value) for name, value in super().__iter__() if name != "data")


def _state(result: T, message: str) -> "State[T]":
    state: State[T] = Completed(message=message, data=result)
    return _ResultState.model_construct(_fields_set=state.model_fields_set, **dict(state))


# # -- run_batch --------------------------------------------------------------------------


def _batch_flow(name: str) -> Callable[[Callable[..., Any]], Any]:
    """``@flow`` for the batch flows: a :class:`BatchFlow` with the cancellation hooks."""

    def decorate(fn: Callable[..., Any]) -> Any:
        return BatchFlow(fn=fn, name=name, on_cancellation=_HOOKS, on_crashed=_HOOKS)  # type: ignore[arg-type]

    return decorate


async def _run_batch_body(
    credentials: AgentRunsCredentials,
    requests: Any,
    batch_key: str | None,
    max_concurrency: int,
    max_active_runs: Any,
    timeout_seconds: float | None,
    cancel_on_timeout: bool,
    collect_results: bool,
    fail_on: FailOn,
    events: EventLevel,
) -> "State[BatchResult]":
    check_fail_on(fail_on)
    _check(max_concurrency, max_active_runs, timeout_seconds)
    key = batch_key or generate_batch_key()
    items, total = await _items(requests, key)
    result, message = await execute(
        "batch",
        credentials,
        items,
        total=total,
        batch_key=key,
        generated_key=batch_key is None,
        known={},
        max_concurrency=max_concurrency,
        max_active_runs=max_active_runs,
        timeout_seconds=timeout_seconds,
        cancel_on_timeout=cancel_on_timeout,
        collect_results=collect_results,
        fail_on=fail_on,
        events=events,
    )
    return _state(result, message)


@_batch_flow("run-batch")
async def arun_batch(
    credentials: AgentRunsCredentials,
    requests: Items,
    batch_key: str | None = None,
    max_concurrency: int = 32,
    max_active_runs: int | Literal["default"] | None = "default",
    timeout_seconds: float | None = None,
    cancel_on_timeout: bool = True,
    collect_results: bool = True,
    fail_on: Literal["never", "any"] | float = "never",
    events: EventLevel = "failures",
) -> BatchResult:
    """Start, watch and collect many remote runs; resume by ``batch_key`` (async flow).

    Args:
        credentials: A credentials block (``LangGraphCredentials``...).
        requests: The items: an :class:`~prefect_agent_runs.flows.sources.ItemsSource`,
            or the path or URL of a JSON Lines or CSV file (fsspec: ``s3://...`` where
            installed), or a list of ``RunRequest`` / dicts of its fields, which is stored
            in the result storage before the flow run starts (never a parameter). An item
            without ``key`` is keyed by its position. Keys must be unique.
        batch_key: Names the batch; rerun with the same key to resume it (no item is
            started twice). Generated (``batch-<time>-<hex>``) and logged when omitted.
        max_concurrency: Requests in flight at once (creates, reads, results).
        max_active_runs: Remote runs alive at once; None: as many as the platform
            queues; ``"default"``: the backend's (unbounded on LangGraph, 256 elsewhere).
        timeout_seconds: Longest wait for each run (None: no limit).
        cancel_on_timeout: Cancel a run whose wait timed out.
        collect_results: Read what each completed run wrote to its thread.
        fail_on: ``"never"``, ``"any"`` or a ratio: when the flow run fails
            (``BatchFailed``, raised after the artifacts are written).
        events: Prefect events (:mod:`prefect_agent_runs.flows.events`): ``"failures"``,
            one per item that did not complete; ``"ends"``, one per item when it is done;
            ``"changes"``, also every status seen before; ``"none"``.

    Returns:
        One outcome per item, in request order.
    """
    return await _run_batch_body(  # type: ignore[return-value]
        credentials,
        requests,
        batch_key,
        max_concurrency,
        max_active_runs,
        timeout_seconds,
        cancel_on_timeout,
        collect_results,
        fail_on,
        events,
    )


@_batch_flow("run-batch")
def run_batch_sync(
    credentials: AgentRunsCredentials,
    requests: Items,
    batch_key: str | None = None,
    max_concurrency: int = 32,
    max_active_runs: int | Literal["default"] | None = "default",
    timeout_seconds: float | None = None,
    cancel_on_timeout: bool = True,
    collect_results: bool = True,
    fail_on: Literal["never", "any"] | float = "never",
    events: EventLevel = "failures",
) -> BatchResult:
    """The sync twin of :func:`arun_batch` (same parameters)."""
    return _run_sync(  # type: ignore[return-value]
        _run_batch_body(
            credentials,
            requests,
            batch_key,
            max_concurrency,
            max_active_runs,
            timeout_seconds,
            cancel_on_timeout,
            collect_results,
            fail_on,
            events,
        )
    )


# -- create_runs ------------------------------------------------------------------------


async def _create_runs_body(
    credentials: AgentRunsCredentials,
    requests: Any,
    batch_key: str | None,
    max_concurrency: int,
    events: EventLevel,
) -> "State[list[RunOutcome]]":
    _check(max_concurrency, None, None)
    key = batch_key or generate_batch_key()
    items, total = await _items(requests, key)
    result, message = await execute(
        "create",
        credentials,
        items,
        total=total,
        batch_key=key,
        generated_key=batch_key is None,
        known={},
        max_concurrency=max_concurrency,
        max_active_runs=None,
        timeout_seconds=None,
        cancel_on_timeout=True,
        collect_results=False,
        fail_on="never",
        events=events,
    )
    return _state(result.outcomes, message)


@_batch_flow("create-runs")
async def acreate_runs(
    credentials: AgentRunsCredentials,
    requests: Items,
    batch_key: str | None = None,
    max_concurrency: int = 32,
    events: EventLevel = "failures",
) -> list[RunOutcome]:
    """Start (or find, for a resumed ``batch_key``) one run per item without waiting.

    Args:
        credentials: A credentials block.
        requests: The items, as for :func:`arun_batch`.
        batch_key: Names the batch (generated when omitted).
        max_concurrency: Creates in flight at once.
        events: Prefect events: ``"ends"`` or ``"changes"``, one ``queued`` event per
            created run; ``"failures"`` (the default) or ``"none"``, none (a refused
            create has no run to name).

    Returns:
        One outcome per item with its ``run`` (or the ``error`` of a refused create);
        pass them to ``wait_for_runs``.
    """
    return await _create_runs_body(credentials, requests, batch_key, max_concurrency, events)  # type: ignore[return-value]


@_batch_flow("create-runs")
def create_runs_sync(
    credentials: AgentRunsCredentials,
    requests: Items,
    batch_key: str | None = None,
    max_concurrency: int = 32,
    events: EventLevel = "failures",
) -> list[RunOutcome]:
    """The sync twin of :func:`acreate_runs`."""
    return _run_sync(_create_runs_body(credentials, requests, batch_key, max_concurrency, events))  # type: ignore[arg-type]


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
    events: EventLevel,
) -> "State[BatchResult]":
    check_fail_on(fail_on)
    _check(max_concurrency, None, timeout_seconds)
    requests, known, found_key = _runs_to_wait(runs)
    key = batch_key or found_key or generate_batch_key()
    result, message = await execute(
        "wait",
        credentials,
        requests,
        total=len(requests),
        batch_key=key,
        generated_key=batch_key is None and found_key is None,
        known=known,
        max_concurrency=max_concurrency,
        max_active_runs=None,
        timeout_seconds=timeout_seconds,
        cancel_on_timeout=cancel_on_timeout,
        collect_results=collect_results,
        fail_on=fail_on,
        events=events,
    )
    return _state(result, message)


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
    events: EventLevel = "failures",
) -> BatchResult:
    """Wait for runs that exist (``Run`` or ``create_runs``' outcomes) and collect them.

    The batch key is taken from the runs' metadata when they share one.

    Args:
        credentials: A credentials block.
        runs: The runs (or outcomes of ``create_runs``).
        timeout_seconds: Longest wait for each run (None: no limit).
        cancel_on_timeout: Cancel a run whose wait timed out.
        max_concurrency: Requests in flight at once.
        collect_results: Read what each completed run wrote to its thread.
        fail_on: ``"never"``, ``"any"`` or a ratio.
        batch_key: Names the batch (default: from the runs' metadata).
        events: Prefect events, as for :func:`arun_batch`.

    Returns:
        One outcome per run, in order.
    """
    return await _wait_body(  # type: ignore[return-value]
        credentials,
        runs,
        batch_key,
        timeout_seconds,
        cancel_on_timeout,
        max_concurrency,
        collect_results,
        fail_on,
        events,
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
    events: EventLevel = "failures",
) -> BatchResult:
    """The sync twin of :func:`await_for_runs`."""
    return _run_sync(  # type: ignore[return-value]
        _wait_body(
            credentials,
            runs,
            batch_key,
            timeout_seconds,
            cancel_on_timeout,
            max_concurrency,
            collect_results,
            fail_on,
            events,
        )
    )


# -- dispatching names (sync callers run the sync flow; async callers get a coroutine) --

run_batch: Any = async_dispatch(arun_batch)(run_batch_sync)
"""Run a batch: :func:`arun_batch` (awaitable) in async code, :func:`run_batch_sync` in sync code."""
create_runs: Any = async_dispatch(acreate_runs)(create_runs_sync)
"""Start runs: :func:`acreate_runs` in async code, :func:`create_runs_sync` in sync code."""
wait_for_runs = async_dispatch(await_for_runs)(wait_for_runs_sync)  # type: ignore[arg-type]
"""Wait for runs: :func:`await_for_runs` in async code, :func:`wait_for_runs_sync` in sync code."""
