"""examples/scheduled_deployment.py and examples/prefect.yaml on a real ``prefect server
start``: the block types registered and a credentials block saved by name, the flow served
with ``flow.serve(cron=...)`` and deployed to a process work pool with a worker, each
triggered with ``run_deployment``; results and artifacts read back through the Prefect API.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_agent_runs import AssistantsCredentials
from prefect_agent_runs.flows import artifact_keys
from prefect_agent_runs.models import METADATA_BATCH_KEY, METADATA_ITEM_KEY
from prefect_agent_runs.testing import AssistantsEmulator
from prefect_agent_runs.testing._process import end_group_and_read, run, spawn
from prefect_agent_runs.testing.prefect_server import PrefectServer

from .conftest import EXAMPLES

ITEMS = [
    json.loads(line)
    for line in (EXAMPLES / "data" / "questions.jsonl").read_text().split("\n")
    if line
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[AssistantsEmulator]:
    with AssistantsEmulator(run_seconds=0.05, poll_after_ms=20) as emu:
        yield emu


@pytest.fixture(scope="module")
def server(prefect_server: PrefectServer, emulator: AssistantsEmulator) -> PrefectServer:
    """The real server with this package's block types and the block the example loads."""
    run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_agent_runs"],
        env=prefect_server.env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        AssistantsCredentials(base_url=emulator.base_url, api_key="sk-nightly-secret").save(
            "nightly", overwrite=True
        )
    return prefect_server


def start(server: PrefectServer, *command: str, **env: str) -> subprocess.Popen[str]:
    """``command`` in a process group of its own (a worker's or a server's flow-run
    processes are in it too: :func:`stop` ends them all)."""
    return spawn(
        list(command),
        cwd=EXAMPLES,
        env=server.env(PREFECT_LOGGING_LEVEL="WARNING", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    output: str = end_group_and_read(process, grace=30)
    return output


async def wait_for_deployment(server: PrefectServer, name: str, process: Any) -> None:
    async with get_client() as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the serving process exited:\n{stop(process)}"
            try:
                await client.read_deployment_by_name(name)
                return
            except Exception:  # ObjectNotFound until the process has registered it
                await asyncio.sleep(0.5)
    raise AssertionError(f"deployment {name} never appeared:\n{stop(process)}")


async def artifacts_of(batch_key: str) -> dict[str, Any]:
    keys = artifact_keys(batch_key)
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys.values())))
        )
    return {a.key: a for a in found}


def check_batch(emulator: AssistantsEmulator, batch_key: str) -> list[dict[str, Any]]:
    runs = [r for r in emulator.runs() if r["metadata"].get(METADATA_BATCH_KEY) == batch_key]
    assert sorted(r["metadata"][METADATA_ITEM_KEY] for r in runs) == sorted(i["key"] for i in ITEMS)
    assert {r["status"] for r in runs} == {"completed"}
    assert {r["assistant_id"] for r in runs} == {"asst_nightly"}
    return runs


async def check_artifacts(batch_key: str, flow_run_ids: set[str]) -> None:
    artifacts = await artifacts_of(batch_key)
    keys = artifact_keys(batch_key)
    assert set(artifacts) == set(keys.values()), artifacts
    data = artifacts[keys["table"]].data
    rows = json.loads(data) if isinstance(data, str) else data
    assert sorted(row["key"] for row in rows) == sorted(item["key"] for item in ITEMS)
    assert {row["status"] for row in rows} == {"completed"}
    assert "sk-nightly-secret" not in json.dumps(rows)
    summary = str(artifacts[keys["summary"]].data)
    assert "8" in summary and "completed" in summary
    assert {str(a.flow_run_id) for a in artifacts.values()} <= flow_run_ids


def expected_key(prefix: str, flow_run: FlowRun) -> str:
    scheduled = flow_run.expected_start_time or flow_run.start_time
    assert scheduled is not None
    return f"{prefix}-{scheduled:%Y-%m-%d}"


async def subflow_ids(parent: FlowRun) -> set[str]:
    """The flow run and the ``run_batch`` flow runs it started."""
    async with get_client() as client:
        runs = await client.read_flow_runs()
        task_runs = {str(t.id) for t in await client.read_task_runs() if t.flow_run_id == parent.id}
    children = {
        str(r.id) for r in runs if r.parent_task_run_id and str(r.parent_task_run_id) in task_runs
    }
    return {str(parent.id), *children}


async def test_served_with_a_cron_schedule_and_triggered(
    server: PrefectServer, emulator: AssistantsEmulator
) -> None:
    prefix = f"served-{uuid.uuid4().hex[:6]}"
    process = start(
        server,
        sys.executable,
        "scheduled_deployment.py",
        "--name",
        "served",
        "--cron",
        "0 2 * * *",
        "--batch-prefix",
        prefix,
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            await wait_for_deployment(server, "nightly-agent-batch/served", process)
            async with get_client() as client:
                deployment = await client.read_deployment_by_name("nightly-agent-batch/served")
            assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]  # type: ignore[union-attr]
            assert deployment.parameters["credentials_block"] == "assistants-credentials/nightly"

            flow_run = await run_deployment(
                "nightly-agent-batch/served", timeout=240, poll_interval=1
            )
            assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
            batch_key = expected_key(prefix, flow_run)
            check_batch(emulator, batch_key)
            await check_artifacts(batch_key, await subflow_ids(flow_run))

            # a second run of the same day resumes that day's batch: nothing starts again
            before = len(emulator.runs())
            again = await run_deployment("nightly-agent-batch/served", timeout=240, poll_interval=1)
            assert again.state is not None and again.state.is_completed(), again.state
            assert expected_key(prefix, again) == batch_key
            assert len(emulator.runs()) == before
    finally:
        output = stop(process)
    assert "Traceback" not in output, output


async def test_deployed_to_a_process_work_pool_and_run_by_a_worker(
    server: PrefectServer, emulator: AssistantsEmulator
) -> None:
    env = server.env()
    created = await asyncio.to_thread(
        run,
        [sys.executable, "-m", "prefect", "work-pool", "create", "agent-runs", "--type", "process"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0 or "already exists" in created.stdout, created.stdout
    deployed = await asyncio.to_thread(
        run,
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    worker = start(
        server,
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        "agent-runs",
        "--type",
        "process",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_HEARTBEAT_SECONDS="5",
    )
    prefix = f"pool-{uuid.uuid4().hex[:6]}"
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            async with get_client() as client:
                deployment = await client.read_deployment_by_name(
                    "nightly-agent-batch/nightly-pool"
                )
            assert deployment.work_pool_name == "agent-runs"
            assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]  # type: ignore[union-attr]
            flow_run = await run_deployment(
                "nightly-agent-batch/nightly-pool",
                parameters={"batch_prefix": prefix},
                timeout=300,
                poll_interval=1,
            )
            assert flow_run.state is not None and flow_run.state.is_completed(), (
                flow_run.state,
                stop(worker),
            )
            batch_key = expected_key(prefix, flow_run)
            check_batch(emulator, batch_key)
            await check_artifacts(batch_key, await subflow_ids(flow_run))
    finally:
        stop(worker)
