"""``run_batch`` against the real LangGraph Agent Server, inside Prefect.

Covers DESIGN.md's batch semantics: tags, resume after kill -9, cancellation (SIGTERM and
a cancelled served deployment), progress / table / summary artifacts, fail_on, O(1) task
runs, and sync / async callers. The measured numbers are printed (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

from prefect_agent_runs.backends.base import derived_thread_id
from prefect_agent_runs.blocks.credentials import LangGraphCredentials
from prefect_agent_runs.errors import ValidationError
from prefect_agent_runs.flows import artifact_keys, create_runs, run_batch, wait_for_runs
from prefect_agent_runs.models import METADATA_FLOW_RUN_ID, BatchFailed, BatchResult
from prefect_agent_runs.testing._process import ProcessTree, end_group
from prefect_agent_runs.testing.prefect_server import PrefectServer

conftest = sys.modules[next(m for m in sys.modules if m.endswith("prefect.conftest"))]
LangGraphProbe = conftest.LangGraphProbe
start_script = conftest.start_script
subprocess_env = conftest.subprocess_env

pytestmark = [pytest.mark.langgraph, pytest.mark.usefixtures("prefect_harness")]


def item(
    i: int, *, sleep: float = 0.0, fail: bool = False, key: str | None = None
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "assistant_id": "echo",
        "input": {
            "messages": [{"role": "user", "content": f"msg {i}"}],
            "sleep_seconds": sleep,
            "steps": 2,
            "fail": fail,
        },
    }
    if key is not None:
        request["key"] = key
    return request


def read_artifacts(keys: list[str]) -> list[dict[str, Any]]:
    """Artifacts by key, read over the REST API (``PrefectClient.read_artifacts`` sends
    ``null`` filters that this Prefect server refuses with a 422)."""
    from prefect.settings import PREFECT_API_URL

    response = httpx.post(
        f"{PREFECT_API_URL.value()}/artifacts/filter",
        json={"artifacts": {"key": {"any_": keys}}, "sort": "CREATED_DESC", "limit": 50},
        timeout=30,
    )
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


def flow_run_id_of(result: BatchResult) -> UUID:
    run = next(o.run for o in result.outcomes if o.run is not None)
    return UUID(run.metadata[METADATA_FLOW_RUN_ID])


# -- a. a real batch: results item by item, server-side count, O(1) task runs ---------------


async def test_run_batch_200_items(
    langgraph_url: str, probe: LangGraphProbe, batch_key: str
) -> None:
    n = 200
    requests = [item(i, sleep=0.3, fail=i % 10 == 0, key=f"k{i}") for i in range(n)]
    start = time.monotonic()
    result = await run_batch(
        LangGraphCredentials(base_url=langgraph_url),
        requests,
        batch_key=batch_key,
        max_concurrency=64,
    )
    seconds = time.monotonic() - start
    assert isinstance(result, BatchResult)
    assert [o.key for o in result.outcomes] == [f"k{i}" for i in range(n)]
    for i, outcome in enumerate(result.outcomes):
        assert outcome.run is not None
        assert outcome.run.metadata["prefect_agent_runs_batch"] == batch_key
        assert outcome.run.metadata["prefect_agent_runs_key"] == f"k{i}"
        if i % 10 == 0:
            assert not outcome.ok
            assert outcome.status.value == "failed"
            assert outcome.error and "echo graph failed as requested" in outcome.error
        else:
            assert outcome.ok, outcome.error
            assert outcome.result is not None and outcome.result.text == f"echo: msg {i}"
    assert result.counts == {"completed": 180, "failed": 20}

    threads = probe.batch_threads(batch_key)
    assert len(threads) == n

    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id_of(result)])),
            sort=TaskRunSort.EXPECTED_START_TIME_DESC,
            limit=200,
        )
    assert len(task_runs) <= 2, [t.name for t in task_runs]
    print(
        f"\n[a] run_batch: {n} items (sleep 0.3 s, 10% failing) in {seconds:.1f} s; "
        f"{len(threads)} threads on the server; {len(task_runs)} Prefect task run(s)"
    )


# -- b. resume after kill -9: one run per item ----------------------------------------------


async def test_resume_after_kill(langgraph_url: str, probe: LangGraphProbe, batch_key: str) -> None:
    n, first = 24, 6
    child = start_script("run_batch_script.py", langgraph_url, batch_key, str(n), "3", "4")
    try:
        waited = probe.wait_until(lambda: len(probe.batch_threads(batch_key)) >= first, timeout=60)
    finally:
        end_group(child, grace=0)  # SIGKILL: no cleanup, no hook
    before = len(probe.batch_threads(batch_key))
    # LangGraph queues every run (max_active_runs=None), so the kill may land after the
    # last create: the rerun must then re-attach to all of them and create none.
    assert 0 < before <= n, before

    start = time.monotonic()
    result = await run_batch(
        LangGraphCredentials(base_url=langgraph_url),
        [
            {
                **item(i, sleep=3),
                "key": f"item-{i}",
                "input": {**item(i, sleep=3)["input"], "steps": 4},
            }
            for i in range(n)
        ],
        batch_key=batch_key,
        max_concurrency=n,
    )
    seconds = time.monotonic() - start
    assert [o.key for o in result.outcomes] == [f"item-{i}" for i in range(n)]
    resumed = [o for o in result.outcomes if o.resumed]
    assert len(resumed) >= before - 1  # a create caught mid-flight may not be visible yet
    for i, outcome in enumerate(result.outcomes):
        assert outcome.ok, outcome.error
        assert outcome.result is not None and outcome.result.text == f"echo: msg {i}"
        runs = probe.thread_runs(derived_thread_id(batch_key, f"item-{i}"))
        assert len(runs) == 1, (outcome.key, runs)
    print(
        f"\n[b] resume: child killed after {waited:.1f} s with {before}/{n} threads created; "
        f"rerun finished {n} items in {seconds:.1f} s, {len(resumed)} re-attached, "
        "exactly 1 run per item on the server"
    )


# -- c. cancellation: SIGTERM, and a cancelled served deployment ----------------------------


def _active(probe: LangGraphProbe, batch_key: str) -> list[dict[str, Any]]:
    return [r for r in probe.batch_runs(batch_key) if r["status"] in conftest.ACTIVE_STATUSES]


def test_sigterm_cancels_remote_runs(
    langgraph_url: str, probe: LangGraphProbe, batch_key: str
) -> None:
    n = 8
    child = start_script("run_batch_script.py", langgraph_url, batch_key, str(n), "60", str(n))
    try:
        probe.wait_until(lambda: len(_active(probe, batch_key)) >= n, timeout=60)
        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        latency = probe.wait_until(lambda: not _active(probe, batch_key), timeout=20)
        child.wait(timeout=30)
        exited = time.monotonic() - sent
    finally:
        end_group(child, grace=0)
    statuses = sorted({r["status"] for r in probe.batch_runs(batch_key)})
    assert statuses == ["interrupted"], statuses
    print(
        f"\n[c] SIGTERM: {n} runs of 60 s all interrupted on the server {latency:.2f} s after "
        f"the signal; child exited after {exited:.1f} s (code {child.returncode})"
    )


async def test_hook_cancels_runs_of_a_killed_process(
    langgraph_url: str, probe: LangGraphProbe, batch_key: str
) -> None:
    """kill -9 leaves no chance for in-process cleanup: the hook (as a runner would call it,
    from another process) finds the runs again from the ledger and the server's metadata."""
    from types import SimpleNamespace

    from prefect.states import Crashed

    from prefect_agent_runs.flows import cancel_remote_runs_hook

    n = 4
    child = start_script("run_batch_script.py", langgraph_url, batch_key, str(n), "60", str(n))
    try:
        probe.wait_until(lambda: len(_active(probe, batch_key)) >= n, timeout=60)
        await asyncio.sleep(0.6)  # let the throttled ledger write (every 0.5 s) happen
    finally:
        end_group(child, grace=0)
    assert len(_active(probe, batch_key)) == n
    flow_run_id = probe.batch_runs(batch_key)[0]["metadata"][METADATA_FLOW_RUN_ID]
    # parameters without batch_key: the hook must use the flow run's pointer in the ledger
    flow_run = SimpleNamespace(id=flow_run_id, parameters={})
    start = time.monotonic()
    await cancel_remote_runs_hook(None, flow_run, Crashed())
    latency = probe.wait_until(lambda: not _active(probe, batch_key), timeout=20)
    print(
        f"\n[c] hook after kill -9: {n} runs interrupted "
        f"{time.monotonic() - start:.2f} s after the hook started (wait {latency:.2f} s)"
    )


def test_cancel_served_deployment(
    langgraph_url: str, probe: LangGraphProbe, batch_key: str, prefect_server: PrefectServer
) -> None:
    """On the session's real ``prefect server start`` (one server for every test that needs
    one in another process, not a server of its own). Issue 13: no remote run active 20 s
    after the cancellation, the flow run ends Cancelled, and no process of ours is left (the
    flow run's process exits while the serve process goes on; then nothing of its tree)."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelling

    api_url = prefect_server.api_url
    env = subprocess_env(PREFECT_HOME=str(prefect_server.home), PREFECT_API_URL=api_url)
    env.pop("PREFECT_API_KEY", None)
    served: subprocess.Popen[str] | None = None
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        probe.wait_until(lambda: _healthy(api_url), timeout=90, interval=0.5)
        timings["server"] = time.monotonic() - t0
        served = start_script("serve_run_batch.py", "cancel-test", env=env)
        tree = ProcessTree(served.pid)
        n = 6
        with temporary_settings({PREFECT_API_URL: api_url}):
            t0 = time.monotonic()
            probe.wait_until(lambda: _deployment_exists(api_url), timeout=90, interval=0.5)
            timings["serve"] = time.monotonic() - t0
            flow_run = run_deployment(
                "run-batch/cancel-test",
                parameters={
                    "credentials": {
                        "base_url": langgraph_url,
                        "block_type_slug": "langgraph-credentials",
                    },
                    "requests": [item(i, sleep=60, key=f"d{i}") for i in range(n)],
                    "batch_key": batch_key,
                    "max_concurrency": n,
                },
                timeout=0,
            )
            t0 = time.monotonic()
            probe.wait_until(lambda: len(_active(probe, batch_key)) >= n, timeout=90, interval=0.5)
            timings["runs started"] = time.monotonic() - t0
            flow_run_processes = dict(tree.snapshot())  # the runner's flow-run process
            assert flow_run_processes, "the served flow run has no process of its own"

            async def cancel() -> None:
                async with get_client() as client:
                    await client.set_flow_run_state(flow_run.id, Cancelling(), force=True)

            asyncio.run(cancel())
            t0 = time.monotonic()
            latency = probe.wait_until(lambda: not _active(probe, batch_key), timeout=20)

            async def final_state() -> str:
                async with get_client() as client:
                    for _ in range(60):
                        fr = await client.read_flow_run(flow_run.id)
                        if fr.state and fr.state.is_final():
                            return str(fr.state.type.value)
                        await asyncio.sleep(0.5)
                    return str(fr.state.type.value if fr.state else None)

            state = asyncio.run(final_state())
            # the serve process's own multiprocessing resource tracker stays with it (it
            # goes when the serve process stops, checked below); the flow run's must not
            left = tree.wait_gone(20, but=lambda cmd: "multiprocessing.resource_tracker" in cmd)
        statuses = sorted({r["status"] for r in probe.batch_runs(batch_key)})
        assert statuses == ["interrupted"], statuses
        assert state == "CANCELLED", state
        assert left == {}, f"the cancelled flow run left {left} (of {flow_run_processes})"
        assert served.poll() is None, "the serve process must go on serving"
        end_group(served, grace=15, sig=signal.SIGINT)
        assert tree.wait_gone(10) == {}, tree.alive()
        print(
            f"\n[c] served deployment: session prefect server healthy in {timings['server']:.1f} s, deployment "
            f"served in {timings['serve']:.1f} s, {n} remote runs started "
            f"{timings['runs started']:.1f} s after run_deployment; after Cancelling all were "
            f"interrupted on the server in {latency:.2f} s; flow run state {state}; "
            f"{len(flow_run_processes)} flow-run process(es) gone"
        )
    finally:
        if served is not None:
            end_group(served, grace=15, sig=signal.SIGINT)
            tree.kill_left()


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _deployment_exists(api_url: str) -> bool:
    try:
        r = httpx.get(f"{api_url}/deployments/name/run-batch/cancel-test", timeout=2)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


# -- d. sync and async callers --------------------------------------------------------------


def test_sync_callers(langgraph_url: str) -> None:
    creds = LangGraphCredentials(base_url=langgraph_url)
    key = f"sync-{uuid.uuid4().hex[:8]}"

    plain = run_batch(creds, [item(i) for i in range(3)], batch_key=key + "-plain")
    assert isinstance(plain, BatchResult) and len(plain.completed) == 3

    @flow
    def sync_parent() -> BatchResult:
        result = run_batch(creds, [item(i) for i in range(3)], batch_key=key + "-flow")
        assert isinstance(result, BatchResult)
        return result

    result = sync_parent()
    assert [o.result.text for o in result.outcomes if o.result] == [
        f"echo: msg {i}" for i in range(3)
    ]


async def test_async_callers(langgraph_url: str) -> None:
    creds = LangGraphCredentials(base_url=langgraph_url)
    key = f"async-{uuid.uuid4().hex[:8]}"

    pending = run_batch(creds, [item(i) for i in range(3)], batch_key=key + "-loop")
    assert asyncio.iscoroutine(pending)
    assert len((await pending).completed) == 3

    @flow
    async def async_parent() -> BatchResult:
        result: BatchResult = await run_batch(
            creds, [item(i) for i in range(3)], batch_key=key + "-flow"
        )
        return result

    result = await async_parent()
    assert len(result.completed) == 3

    # create_runs then wait_for_runs, from async code
    created = await create_runs(
        creds, [item(i, sleep=0.2) for i in range(3)], batch_key=key + "-cw"
    )
    assert [o.key for o in created] == ["0", "1", "2"] and all(o.run for o in created)
    waited = await wait_for_runs(creds, created)
    assert waited.batch_key == key + "-cw"
    assert [o.result.text for o in waited.outcomes if o.result] == [
        f"echo: msg {i}" for i in range(3)
    ]


# -- e. fail_on, validation and artifacts ---------------------------------------------------


async def test_fail_on_and_artifacts(langgraph_url: str, batch_key: str) -> None:
    creds = LangGraphCredentials(base_url=langgraph_url)
    requests = [item(i, fail=i < 2) for i in range(10)]  # 20% fail

    ok = await run_batch(creds, requests, batch_key=batch_key, fail_on=0.5)
    assert ok.counts == {"failed": 2, "completed": 8}
    with pytest.raises(BatchFailed) as info:
        await run_batch(creds, requests, batch_key=batch_key + "-b", fail_on="any")
    assert len(info.value.result.failed) == 2
    with pytest.raises(BatchFailed):
        await run_batch(creds, requests, batch_key=batch_key + "-c", fail_on=0.1)

    # artifacts: written for the passing and for the failing batch (before BatchFailed)
    for key in (batch_key, batch_key + "-b"):
        keys = artifact_keys(key)
        found = read_artifacts(list(keys.values()))
        by_key = {a["key"]: a for a in found}
        assert set(by_key) == set(keys.values()), sorted(by_key)
        assert by_key[keys["progress"]]["type"] == "progress"
        assert float(by_key[keys["progress"]]["data"]) == 100.0
        assert by_key[keys["table"]]["type"] == "table"
        rows = json.loads(by_key[keys["table"]]["data"])  # one row per item, in order
        assert [row["status"] for row in rows] == ["failed"] * 2 + ["completed"] * 8, rows
        assert all(
            set(row) == {"key", "status", "seconds", "error", "reply", "thread", "run"}
            and row["run"]
            and row["thread"]
            and isinstance(row["seconds"], float)
            for row in rows
        ), rows
        assert "echo graph failed" in rows[0]["error"] and rows[2]["reply"].startswith("echo")
        # both are the flow run's (its Artifacts tab), not loose artifacts
        assert by_key[keys["table"]]["flow_run_id"] == by_key[keys["summary"]]["flow_run_id"]
        assert by_key[keys["table"]]["flow_run_id"] is not None
        summary = str(by_key[keys["summary"]]["data"])
        assert "failed" in summary and "echo graph failed" in summary and key in summary

    # validation before anything is sent
    with pytest.raises(ValidationError, match="same key"):
        await run_batch(creds, [item(0, key="a"), item(1, key="a")], batch_key=batch_key + "-d")
    with pytest.raises(ValidationError):
        await run_batch(creds, [{"input": {}}], batch_key=batch_key + "-e")
    with pytest.raises(ValidationError):
        await run_batch(creds, [item(0)], batch_key=batch_key + "-f", fail_on=2.0)


def test_batch_key_generated(langgraph_url: str, caplog: pytest.LogCaptureFixture) -> None:
    result = run_batch(LangGraphCredentials(base_url=langgraph_url), [item(0)])
    assert result.batch_key.startswith("batch-")
    assert len(result.batch_key.split("-")) == 4
    assert result.outcomes[0].run is not None
    assert result.outcomes[0].run.metadata["prefect_agent_runs_batch"] == result.batch_key
