"""The Prefect tasks and AgentRunJob against the real LangGraph Agent Server.

Every task is run from an async flow, from a sync flow, and from a running event loop
outside any flow (a notebook); the wait is checked for its deadline, its cancellation
paths (asyncio cancellation, the Prefect task's own timeout), and for creating one task
run however long the remote run lasts.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from typing import Any

import pytest
from prefect import flow
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort
from prefect.context import get_run_context
from prefect.tasks import Task

from prefect_agent_runs import (
    AgentRunJob,
    LangGraphCredentials,
    Run,
    RunRequest,
    RunStatus,
    ThreadResult,
)
from prefect_agent_runs.errors import NotFound, RunFailed, RunTimedOut
from prefect_agent_runs.tasks import (
    acancel_run,
    acreate_run,
    adelete_run,
    aget_run,
    aget_run_result,
    alist_runs,
    astream_run_events,
    await_for_run,
    cancel_run,
    create_run,
    delete_run,
    get_run,
    get_run_result,
    list_runs,
    stream_run_events,
    wait_for_run,
)

pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    # tasks called outside a flow (the notebook cases) log locally only; Prefect warns
    pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs"),
]

PAIRS = [
    (create_run, acreate_run),
    (get_run, aget_run),
    (wait_for_run, await_for_run),
    (cancel_run, acancel_run),
    (list_runs, alist_runs),
    (delete_run, adelete_run),
    (stream_run_events, astream_run_events),
    (get_run_result, aget_run_result),
]


def req(text: str, *, sleep: float = 0.0, steps: int = 1, fail: bool = False) -> RunRequest:
    """A request for the ``echo`` graph: sleeps, then replies ``echo: <text>`` (or fails)."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if sleep:
        body.update(sleep_seconds=sleep, steps=steps)
    if fail:
        body["fail"] = True
    return RunRequest(
        assistant_id="echo",
        input=body,
        options={"stream_mode": ["values"], "stream_resumable": True},
    )


@pytest.fixture(scope="module")
def creds(langgraph_url: str) -> LangGraphCredentials:
    return LangGraphCredentials(base_url=langgraph_url)


async def remote_status(creds: LangGraphCredentials, run: Run) -> RunStatus:
    async with creds.get_client() as client:
        current: Run = await client.get_run(run.id, thread_id=run.thread_id)  # type: ignore[attr-defined]
    return current.status


async def eventually(
    creds: LangGraphCredentials, run: Run, wanted: RunStatus, within: float = 10
) -> None:
    """Read the run on the server until it has status ``wanted`` (or ``within`` passed)."""
    deadline = time.monotonic() + within
    status = await remote_status(creds, run)
    while status is not wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        status = await remote_status(creds, run)
    assert status is wanted, f"{run.id} is {status}, not {wanted}"


async def eventually_interrupted(creds: LangGraphCredentials, run: Run, within: float = 10) -> None:
    await eventually(creds, run, RunStatus.INTERRUPTED, within)


# -- task configuration ------------------------------------------------------------------


@pytest.mark.parametrize("twin,atask", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_tasks_have_no_retries_and_no_cache(twin: Any, atask: Task[Any, Any]) -> None:
    sync_task = twin.__wrapped__
    for t in (atask, sync_task):
        assert isinstance(t, Task)
        assert t.retries == 0
        assert t.cache_policy is NO_CACHE
    assert atask.isasync and not sync_task.isasync
    assert twin.aio is atask
    assert twin.retries == 0  # the dispatcher exposes the sync task's settings
    assert twin.submit.__self__ is sync_task and twin.map.__self__ is sync_task
    assert inspect.signature(twin).parameters.keys() == inspect.signature(atask).parameters.keys()


def test_with_options_keeps_dispatching() -> None:
    timed = wait_for_run.with_options(timeout_seconds=5)  # type: ignore[attr-defined]
    assert timed.__wrapped__.timeout_seconds == 5
    assert timed.aio.timeout_seconds == 5 and timed.aio.isasync


# -- every task, from an async flow, a sync flow and a notebook ---------------------------


async def test_every_task_from_an_async_flow(creds: LangGraphCredentials) -> None:
    @flow
    async def async_flow() -> dict[str, Any]:
        pending = create_run(creds, req("async flow", sleep=0.4, steps=2))
        assert inspect.isawaitable(pending)  # dispatch gives the async task in async flows
        run = await pending
        events = await stream_run_events(creds, run, max_events=500)
        seen = await get_run(creds, run.id, thread_id=run.thread_id)
        done = await wait_for_run(creds, run, timeout_seconds=60, poll_interval_seconds=0.1)
        result = await get_run_result(creds, done)
        listed = await list_runs(creds, thread_id=run.thread_id, limit=5)
        again = await cancel_run(creds, done)  # harmless on a finished run
        await delete_run(creds, done)
        with pytest.raises(NotFound):
            await get_run(creds, done)
        return {
            "run": run,
            "events": events,
            "seen": seen,
            "done": done,
            "result": result,
            "listed": listed,
            "again": again,
        }

    out = await async_flow()
    run = out["run"]
    assert isinstance(run, Run) and run.thread_id
    assert out["seen"].id == run.id
    assert out["done"].status is RunStatus.COMPLETED
    assert isinstance(out["result"], ThreadResult) and out["result"].text == "echo: async flow"
    assert [r.id for r in out["listed"]] == [run.id]
    assert out["again"].status is RunStatus.COMPLETED
    events = out["events"]
    assert events and events[-1]["event"] == "values"
    assert events[-1]["data"]["reply"] == "echo: async flow"


def test_every_task_from_a_sync_flow(creds: LangGraphCredentials) -> None:
    @flow
    def sync_flow() -> dict[str, Any]:
        run = create_run(creds, req("sync flow", sleep=0.4, steps=2))
        assert isinstance(run, Run)  # a value, not a coroutine
        events = stream_run_events(creds, run, max_events=2)
        seen = get_run(creds, run)
        done = wait_for_run(creds, run.id, thread_id=run.thread_id, poll_interval_seconds=0.1)
        result = get_run_result(creds, done)
        listed = list_runs(creds, thread_id=run.thread_id, filters={"status": "success"})
        again = cancel_run(creds, done.id, thread_id=done.thread_id)
        delete_run(creds, done)
        with pytest.raises(NotFound):
            get_run(creds, done)
        return {
            "events": events,
            "seen": seen,
            "done": done,
            "result": result,
            "listed": listed,
            "again": again,
        }

    out = sync_flow()
    assert len(out["events"]) == 2  # capped by max_events
    assert isinstance(out["seen"], Run)
    assert out["done"].status is RunStatus.COMPLETED
    assert out["result"].text == "echo: sync flow"
    assert [r.id for r in out["listed"]] == [out["done"].id]
    assert out["again"].status is RunStatus.COMPLETED


async def test_from_a_running_loop_like_a_notebook(creds: LangGraphCredentials) -> None:
    # a notebook cell: a running event loop, no flow; the plain names are awaitable
    run = await create_run(creds, req("notebook", sleep=0.3))
    done = await wait_for_run(creds, run, poll_interval_seconds=0.1)
    assert done.status is RunStatus.COMPLETED
    assert (await aget_run_result(creds, done)).text == "echo: notebook"

    # a sync flow called from a worker thread of that notebook runs the sync tasks
    @flow
    def sync_flow_in_a_thread(message: str) -> str | None:
        started = create_run(creds, req(message))
        assert isinstance(started, Run)
        return get_run_result(creds, wait_for_run(creds, started)).text

    assert await asyncio.to_thread(sync_flow_in_a_thread, "from a thread") == "echo: from a thread"


# -- waiting: outcome, deadline, cancellation, one task run --------------------------------


def test_wait_raises_for_a_failed_run_unless_told_not_to(creds: LangGraphCredentials) -> None:
    run = create_run(creds, req("boom", fail=True))
    with pytest.raises(RunFailed, match=run.id):
        wait_for_run(creds, run)
    failed = wait_for_run(creds, run, raise_on_failure=False)
    assert failed.status is RunStatus.FAILED


async def test_deadline_raises_run_timed_out_and_cancels_the_remote_run(
    creds: LangGraphCredentials,
) -> None:
    run = await acreate_run(creds, req("too slow", sleep=30, steps=30))
    started = time.monotonic()
    with pytest.raises(RunTimedOut) as info:
        await await_for_run(creds, run, timeout_seconds=1, poll_interval_seconds=0.1)
    assert time.monotonic() - started < 10
    assert info.value.cancelled
    assert await remote_status(creds, run) is RunStatus.INTERRUPTED


async def test_deadline_without_cancel_on_timeout_leaves_the_run(
    creds: LangGraphCredentials,
) -> None:
    run = await acreate_run(creds, req("left running", sleep=3, steps=3))
    with pytest.raises(RunTimedOut) as info:
        await await_for_run(creds, run, timeout_seconds=0.5, cancel_on_timeout=False)
    assert not info.value.cancelled
    assert await remote_status(creds, run) in (RunStatus.RUNNING, RunStatus.QUEUED)
    await acancel_run(creds, run)


async def test_cancelling_the_wait_cancels_the_remote_run(creds: LangGraphCredentials) -> None:
    run = await acreate_run(creds, req("cancel me", sleep=30, steps=30))
    waiting = asyncio.create_task(await_for_run(creds, run, poll_interval_seconds=0.1))
    await eventually(creds, run, RunStatus.RUNNING)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await eventually_interrupted(creds, run)


async def test_task_timeout_of_the_async_task_cancels_the_remote_run(
    creds: LangGraphCredentials,
) -> None:
    run = await acreate_run(creds, req("task timeout async", sleep=30, steps=30))

    @flow
    async def async_flow() -> tuple[bool, str]:
        timed = await_for_run.with_options(timeout_seconds=1)
        state = await timed(creds, run, return_state=True)
        return state.is_failed(), state.message or ""

    failed, message = await async_flow()
    assert failed and "timeout" in message.lower()
    await eventually_interrupted(creds, run)


def test_task_timeout_of_the_sync_task_cancels_the_remote_run(
    creds: LangGraphCredentials,
) -> None:
    run = create_run(creds, req("task timeout sync", sleep=30, steps=30))

    @flow
    def sync_flow() -> tuple[bool, str]:
        timed = wait_for_run.with_options(timeout_seconds=1)  # type: ignore[attr-defined]
        state = timed(creds, run, return_state=True)
        return state.is_failed(), state.message or ""

    started = time.monotonic()
    failed, message = sync_flow()
    assert time.monotonic() - started < 20
    assert failed and "timeout" in message.lower()
    asyncio.run(eventually_interrupted(creds, run))


async def test_a_long_wait_is_one_task_run(creds: LangGraphCredentials) -> None:
    @flow
    async def async_flow() -> tuple[str, Run]:
        run = await create_run(creds, req("three seconds", sleep=3, steps=6))
        done = await wait_for_run(creds, run, poll_interval_seconds=0.05)
        return str(get_run_context().flow_run.id), done  # type: ignore[union-attr]

    flow_run_id, done = await async_flow()
    assert done.status is RunStatus.COMPLETED

    names: list[str] = []
    async with get_client() as client:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=50,
            )
            names = sorted(tr.name.rsplit("-", 1)[0] for tr in task_runs)
            terminal = all(tr.state is not None and tr.state.is_final() for tr in task_runs)
            if len(names) >= 2 and terminal:
                break
            await asyncio.sleep(0.3)
    assert names == ["acreate_run", "await_for_run"], names


# -- AgentRunJob ---------------------------------------------------------------------------


async def test_agent_run_job_async(creds: LangGraphCredentials) -> None:
    job = AgentRunJob(
        credentials=creds,
        assistant_id="echo",
        input={"sleep_seconds": 0.5, "steps": 2},
        message="job",
        poll_interval_seconds=0.1,
        timeout_seconds=60,
    )
    agent_run = await job.trigger()
    assert agent_run.run.thread_id and agent_run.run.backend == "langgraph"
    assert await agent_run.get_status() in (RunStatus.QUEUED, RunStatus.RUNNING)
    done = await agent_run.wait_for_completion()
    assert done.status is RunStatus.COMPLETED and agent_run.run is done
    result = await agent_run.fetch_result()
    assert result.text == "echo: job" and result.run_id == done.id
    assert await agent_run.get_status() is RunStatus.COMPLETED

    slow = await job.model_copy(update={"input": {"sleep_seconds": 30, "steps": 30}}).trigger()
    await slow.cancel()
    await eventually_interrupted(creds, slow.run)
    assert await slow.get_status() is RunStatus.INTERRUPTED


def test_agent_run_job_saved_loaded_and_used_from_a_sync_flow(
    creds: LangGraphCredentials,
) -> None:
    name = f"echo-job-{uuid.uuid4().hex[:8]}"
    AgentRunJob(credentials=creds, assistant_id="echo", message="saved job").save(name)

    @flow
    def sync_flow() -> tuple[RunStatus, str | None, RunStatus]:
        job = AgentRunJob.load(name)
        agent_run = job.trigger()
        status = agent_run.wait_for_completion().status
        text = agent_run.fetch_result().text
        return status, text, agent_run.get_status()

    assert sync_flow() == (RunStatus.COMPLETED, "echo: saved job", RunStatus.COMPLETED)

    timed = AgentRunJob(
        credentials=creds,
        assistant_id="echo",
        input={"sleep_seconds": 30, "steps": 30},
        message="job deadline",
        timeout_seconds=1,
    )
    agent_run = timed.trigger()
    with pytest.raises(RunTimedOut):
        agent_run.wait_for_completion()
    asyncio.run(eventually_interrupted(creds, agent_run.run))
