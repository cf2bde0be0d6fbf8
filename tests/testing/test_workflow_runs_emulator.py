"""The workflow-runs (Linkage) emulator: behaviour, and its traffic against the Linkage document.

Every exchange of every test is checked against ``linkage-openapi.yaml`` when the test ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from prefect_agent_runs.testing import FakeClock, WorkflowRunsEmulator, pytest_plugin
from prefect_agent_runs.testing.contracts import check_workflow_runs_traffic
from prefect_agent_runs.testing.openapi_contract import ContractViolation

workflow_runs_emulator = pytest_plugin.workflow_runs_emulator


@pytest.fixture
def make_emu() -> Iterator[Callable[..., WorkflowRunsEmulator]]:
    started: list[WorkflowRunsEmulator] = []

    def make(**kwargs: Any) -> WorkflowRunsEmulator:
        emu = WorkflowRunsEmulator(**kwargs)
        emu.start()
        started.append(emu)
        return emu

    try:
        yield make
    finally:
        for emu in started:
            emu.stop()
    for emu in started:
        assert check_workflow_runs_traffic(emu) > 0


def http(emu: WorkflowRunsEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, timeout=10)


def create(c: httpx.Client, workflow: str = "wf", message: str = "hi", **script: Any) -> str:
    meta = {"emulator": json.dumps(script)} if script else {}
    r = c.post("/api/v1/runs", json={"workflowId": workflow, "input": {"message": message},
                                     "metadata": meta})  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["runId"])


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    out, event_id = [], None
    for line in response.iter_lines():
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["id"] == event_id
            out.append((str(event_id), data))
    return out


def test_run_lifecycle_follows_the_clock(make_emu: Callable[..., WorkflowRunsEmulator]) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, run_seconds=10, queue_seconds=1)
    with http(emu) as c:
        run_id = create(c, message="q1")
        run = c.get(f"/api/v1/runs/{run_id}").json()
        assert run["status"] == "queued" and run["startedAt"] is None
        assert set(run) == {"runId", "workflowId", "status", "nodeStatuses", "startedAt",
                            "finishedAt", "metadata", "lastEventId"}  # fmt: skip
        clock.advance(2)
        assert c.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"
        clock.advance(10)
        run = c.get(f"/api/v1/runs/{run_id}").json()
        assert run["status"] == "completed" and run["finishedAt"]
        assert run["nodeStatuses"] == {"node_1": "completed", "node_2": "completed"}
        events = c.get(f"/api/v1/runs/{run_id}/events").json()["events"]
        assert [e["type"] for e in events] == ["run.created", "run.started", "node.completed",
                                               "node.completed", "run.completed"]  # fmt: skip
        assert events[-1]["data"]["output"]["text"] == "echo: q1"
        assert run["lastEventId"] == events[-1]["id"]


@pytest.mark.parametrize(
    ("script", "status", "last"),
    [({"outcome": "failed", "error": "boom"}, "failed", "run.failed"),
     ({"outcome": "never", "status": "awaiting_approval"}, "awaiting_approval", "run.started")],
)  # fmt: skip
def test_scripted_outcomes(
    make_emu: Callable[..., WorkflowRunsEmulator], script: dict[str, Any], status: str, last: str
) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, progress_events=0)
    with http(emu) as c:
        run_id = create(c, **script)
        clock.advance(5)
        assert c.get(f"/api/v1/runs/{run_id}").json()["status"] == status
        assert emu.events(run_id)[-1]["type"] == last


def test_list_runs_pages_with_the_server_cursor(
    make_emu: Callable[..., WorkflowRunsEmulator],
) -> None:
    emu = make_emu()
    with http(emu) as c:
        ids = [create(c, "wf-a") for _ in range(25)]
        create(c, "wf-b")
        seen, cursor = [], None
        while True:
            params = {"workflowId": "wf-a", "limit": "10", **({"cursor": cursor} if cursor else {})}
            page = c.get("/api/v1/runs", params=params).json()
            seen += [r["runId"] for r in page["runs"]]
            cursor = page["nextCursor"]
            if not page["hasMore"]:
                assert cursor is None
                break
        assert seen == list(reversed(ids))
        r = c.get("/api/v1/runs")
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "workflowId is required"


def test_events_cursor_paging_over_1200_events(
    make_emu: Callable[..., WorkflowRunsEmulator],
) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock)
    with http(emu) as c:
        run_id = create(c, events=1200, seconds=1)
        clock.advance(2)
        got, cursor, pages = [], None, 0
        while True:
            params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
            page = c.get(f"/api/v1/runs/{run_id}/events", params=params).json()
            pages += 1
            got += page["events"]
            cursor = page["nextCursor"]
            if not page["hasMore"]:
                break
        assert len(got) == 1203 and pages == 13
        assert [e["sequence"] for e in got] == list(range(1, 1204))
        # polling at the end gives nothing new and keeps the cursor
        tail = c.get(f"/api/v1/runs/{run_id}/events", params={"cursor": cursor}).json()
        assert tail["events"] == [] and tail["nextCursor"] == cursor
        bad = c.get(f"/api/v1/runs/{run_id}/events", params={"cursor": "evt_nope"})
        assert bad.status_code == 400 and bad.json()["error"]["message"] == "Invalid cursor"


def test_sse_stream_and_resume_after_drops(make_emu: Callable[..., WorkflowRunsEmulator]) -> None:
    emu = make_emu(run_seconds=0.05, progress_events=10)
    with http(emu) as c:
        run_id = create(c)
        with c.stream("GET", f"/api/v1/runs/{run_id}/events",
                      headers={"Accept": "text/event-stream"}) as r:  # fmt: skip
            assert r.headers["content-type"].startswith("text/event-stream")
            full = sse_events(r)
        assert full[-1][1]["type"] == "run.completed" and len(full) == 13
        emu.drop_streams(after_events=4)
        got: list[str] = []
        last: str | None = None
        for attempt in range(10):
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last} if last else {})}
            params = {"cursor": last} if last and attempt % 2 else {}
            with c.stream("GET", f"/api/v1/runs/{run_id}/events", headers=headers,
                          params=params) as r:  # fmt: skip
                chunk = sse_events(r)
            got += [i for i, _ in chunk]
            last = got[-1]
            if chunk[-1][1]["type"] == "run.completed":
                break
        assert got == [i for i, _ in full]
        assert attempt == 3


def test_ingest_one_many_and_validation(make_emu: Callable[..., WorkflowRunsEmulator]) -> None:
    emu = make_emu(outcome="external")
    with http(emu) as c:
        run_id = create(c)
        one = c.post(f"/api/v1/runs/{run_id}/events", json={"type": "log", "data": {"n": 1}})
        assert one.status_code == 200 and one.json()["accepted"] == 1
        many = c.post(f"/api/v1/runs/{run_id}/events",
                      json={"events": [{"type": "log"}, {"type": "log", "runId": run_id}]})  # fmt: skip
        assert many.json()["accepted"] == 2
        assert many.json()["nextCursor"] == many.json()["events"][-1]["id"]
        for body, message in [
            ([], "Invalid run events payload"),
            ([{"type": ""}], "Invalid run events payload"),
            ({"type": "x", "data": [1]}, "Invalid run events payload"),
            ({"type": "x", "runId": "run_other"}, "Event runId/workflowId mismatch"),
            ({"type": "x", "workflowId": "other"}, "Event runId/workflowId mismatch"),
        ]:
            r = c.post(f"/api/v1/runs/{run_id}/events", json=body)
            assert r.status_code == 400 and r.json()["error"]["message"] == message, body
        r = c.post(f"/api/v1/runs/{run_id}/events", content=b"{not json",
                   headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code == 400
        # an ingested terminal event ends an "external" run
        assert c.get(f"/api/v1/runs/{run_id}").json()["status"] == "running"
        c.post(f"/api/v1/runs/{run_id}/events", json={"type": "run.completed",
                                                      "data": {"output": {"text": "ok"}}})  # fmt: skip
        assert c.get(f"/api/v1/runs/{run_id}").json()["status"] == "completed"
        assert c.post("/api/v1/runs/run_missing/events", json={"type": "x"}).status_code == 404


def test_create_validation_auth_and_faults(make_emu: Callable[..., WorkflowRunsEmulator]) -> None:
    emu = make_emu(api_key="secret", client_id="cid")
    good = {"x-client-id": "cid", "x-client-secret": "secret"}
    with http(emu) as c:
        r = c.post("/api/v1/runs", json={"workflowId": "wf"})
        assert r.status_code == 401 and r.json() == {"error": {"message": "Unauthorized",
                                                                "details": None}}  # fmt: skip
        assert emu.requests[-1].headers.get("x-client-secret") is None
        for body in [{}, {"workflowId": ""}, {"workflowId": "w", "metadata": []}, [1],
                     {"workflowId": "w", "metadata": {"emulator": '{"outcome": "maybe"}'}}]:  # fmt: skip
            r = c.post("/api/v1/runs", json=body, headers=good)
            assert r.status_code == 400 and r.json()["error"]["message"] == "Invalid run payload"
        assert c.get("/api/v1/runs/run_x", headers=good).json()["error"]["message"] == (
            "Run not found"
        )
        assert c.get("/api/v2/nothing", headers=good).status_code == 404
        emu.inject_faults(rate=1.0, statuses=(500,), paths=["/api/v1/runs"], methods=["POST"])
        r = c.post("/api/v1/runs", json={"workflowId": "wf"}, headers=good)
        assert r.status_code == 500 and r.json()["error"]["message"] == "Failed to create run"
        emu.inject_faults(rate=1.0, statuses=(429, 502))
        statuses = {c.get("/api/v1/runs", params={"workflowId": "w"}, headers=good).status_code
                    for _ in range(8)}  # fmt: skip
        assert statuses == {429, 502}
        emu.clear_faults()
        assert c.get("/api/v1/runs", params={"workflowId": "w"}, headers=good).status_code == 200
        assert emu.requests[-1].headers["x-client-secret"] == "<redacted>"


def test_contract_check_catches_an_undeclared_query(
    workflow_runs_emulator: WorkflowRunsEmulator,
) -> None:
    with http(workflow_runs_emulator) as c:
        c.get("/api/v1/runs", params={"workflowId": "w", "page": "2"})
    with pytest.raises(ContractViolation, match="page"):
        check_workflow_runs_traffic(workflow_runs_emulator)
    workflow_runs_emulator.reset()
    assert workflow_runs_emulator.runs() == []
