"""The workflow_runs backend (seed 002) against WorkflowRunsEmulator, traffic checked both ways."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from prefect_agent_runs import RunRequest, RunStatus, WorkflowRunsCredentials
from prefect_agent_runs.backends import registry
from prefect_agent_runs.backends.base import Capability
from prefect_agent_runs.backends.workflow_runs import WorkflowRunsClient
from prefect_agent_runs.errors import BadRequest, NotSupported, ValidationError
from prefect_agent_runs.testing import WorkflowRunsEmulator
from prefect_agent_runs.testing.contracts import check_workflow_runs_traffic


@pytest.fixture
def emu() -> Any:
    with WorkflowRunsEmulator(run_seconds=0.05, api_key="s3cret", client_id="cid") as emulator:
        yield emulator
    assert check_workflow_runs_traffic(emulator) > 0


@pytest.fixture
async def client(emu: WorkflowRunsEmulator) -> AsyncIterator[WorkflowRunsClient]:
    credentials = WorkflowRunsCredentials(base_url=emu.base_url, api_key="s3cret", client_id="cid")
    async with credentials.get_client() as c:
        assert isinstance(c, WorkflowRunsClient)
        yield c


def req(message: str = "hi", **script: Any) -> RunRequest:
    meta = {"emulator": json.dumps(script)} if script else {}
    return RunRequest(assistant_id="wf", message=message, metadata=meta)


async def test_registered_with_capabilities() -> None:
    spec = registry.get("workflow_runs")
    assert spec.client is WorkflowRunsClient
    assert spec.has(Capability.STREAM_EVENTS) and spec.has(Capability.INGEST_EVENTS)
    assert not spec.has(Capability.CANCEL)


async def test_create_get_list_wait_result(client: WorkflowRunsClient) -> None:
    run = await client.create_run(req("q1"))
    assert run.status in (RunStatus.QUEUED, RunStatus.RUNNING) and run.assistant_id == "wf"
    done = await client.wait_for_run(run, timeout_seconds=10)
    assert done.status is RunStatus.COMPLETED
    assert (await client.get_run(run.id)).status is RunStatus.COMPLETED
    result = await client.get_result(done)
    assert result.text == "echo: q1" and result.values is not None
    assert result.values["events"][-1]["type"] == "run.completed"
    for _ in range(24):
        await client.create_run(req())
    page = await client.list_runs(workflow_id="wf", limit=10)
    assert len(page.items) == 10 and page.has_next_page()
    assert len(await client.list_runs(workflow_id="wf", limit=10).get_all()) == 25
    with pytest.raises(ValidationError, match="workflow_id"):
        await client.list_runs(limit=5)


async def test_wait_by_polling_and_failed_and_unknown(
    emu: WorkflowRunsEmulator, client: WorkflowRunsClient, caplog: pytest.LogCaptureFixture
) -> None:
    client.stream = False
    failed = await client.wait_for_run(await client.create_run(req(outcome="failed")))
    assert failed.status is RunStatus.FAILED
    odd = await client.create_run(req(outcome="never", status="awaiting_approval", queue_seconds=0))
    seen = await client.get_run(odd.id)
    seen = await client.get_run(odd.id)
    assert seen.status is RunStatus.UNKNOWN and seen.raw_status == "awaiting_approval"
    assert not seen.status.is_terminal
    assert sum("awaiting_approval" in r.message for r in caplog.records) == 1


async def test_cursor_paging_over_1000_events(client: WorkflowRunsClient) -> None:
    run = await client.wait_for_run(await client.create_run(req(events=1100, seconds=0.05)))
    chunk = await client.get_events_chunk(run.id, limit=100)
    assert (
        len(chunk.events) == 100 and chunk.has_more and chunk.next_cursor == chunk.events[-1]["id"]
    )
    events = await client.get_events(run.id, limit=100).get_all()
    assert len(events) == 1103
    assert [e["sequence"] for e in events] == list(range(1, 1104))
    later = await client.get_events(run.id, cursor=events[999]["id"]).get_all()
    assert [e["sequence"] for e in later] == list(range(1001, 1104))
    with pytest.raises(BadRequest, match="Invalid cursor"):
        await client.get_events_chunk(run.id, cursor="evt_bogus")


async def test_sse_resumes_after_dropped_connections(
    emu: WorkflowRunsEmulator, client: WorkflowRunsClient
) -> None:
    run = await client.create_run(req(events=20, seconds=0.1))
    emu.drop_streams(after_events=3, times=5)
    got = [e async for e in client.stream_events(run)]
    ids = [e.id for e in got]
    assert got[-1].event == "run.completed" and len(ids) == len(set(ids)) == 23
    assert [e.data["sequence"] for e in got] == list(range(1, 24))
    streams = [r for r in emu.requests if r.query.get("stream") == "true"]
    assert len(streams) == 6 and streams[1].query["cursor"] == ids[2]
    # waiting follows the stream too, through drops
    emu.drop_streams(after_events=2, times=3)
    second = await client.create_run(req(events=6, seconds=0.05))
    assert (await client.wait_for_run(second, timeout_seconds=10)).status is RunStatus.COMPLETED


async def test_ingest_one_many_and_validation(client: WorkflowRunsClient) -> None:
    run = await client.create_run(req(outcome="external"))
    one = await client.ingest_events(run.id, {"type": "log", "data": {"n": 1}})
    assert one["accepted"] == 1
    many = await client.ingest_events(run.id, [{"type": "log"}, {"type": "log"}])
    assert many["accepted"] == 2
    with pytest.raises(BadRequest, match="Invalid run events payload") as info:
        await client.ingest_events(run.id, [{"type": "ok"}, {"type": ""}])
    assert "type" in info.value.field_errors
    with pytest.raises(BadRequest, match="Event runId/workflowId mismatch"):
        await client.ingest_events(run.id, [{"type": "x", "runId": "run_other"}])
    await client.ingest_events(run.id, {"type": "run.completed", "data": {"output": "fine"}})
    done = await client.wait_for_run(run)
    assert done.status is RunStatus.COMPLETED and (await client.get_result(done)).text == "fine"


async def test_no_cancel_and_no_threads(client: WorkflowRunsClient) -> None:
    run = await client.create_run(req())
    with pytest.raises(NotSupported, match="no cancel endpoint"):
        await client.cancel_run(run.id)
    with pytest.raises(ValidationError, match="no threads"):
        await client.create_run(RunRequest(assistant_id="wf", thread_id="t1", message="x"))


async def test_lost_create_answer_is_adopted_not_resent(
    emu: WorkflowRunsEmulator, client: WorkflowRunsClient
) -> None:
    emu.inject_faults(rate=1.0, statuses=(500,), paths=["/api/v1/runs"], methods=["POST"],
                      after_commit=True)  # fmt: skip
    client._sleep = _no_sleep
    run = await client.create_run(req())
    emu.clear_faults()
    assert len(emu.runs()) == 1 and emu.runs()[0]["runId"] == run.id


async def _no_sleep(seconds: float) -> None:
    return None


async def test_secret_never_in_errors(emu: WorkflowRunsEmulator) -> None:
    async with WorkflowRunsClient(emu.base_url, api_key="wrong-secret", client_id="cid") as c:
        with pytest.raises(Exception, match="Unauthorized") as info:
            await c.get_run("run_x")
        assert "wrong-secret" not in str(info.value)
