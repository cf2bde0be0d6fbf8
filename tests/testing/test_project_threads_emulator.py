"""The project thread-runs emulator: behaviour, and its traffic against the service's swagger.

Every exchange of every test is checked against ``project-threads-swagger.json`` when it ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from prefect_agent_runs.testing import FakeClock, ProjectThreadsEmulator, pytest_plugin
from prefect_agent_runs.testing.contracts import check_project_threads_traffic
from prefect_agent_runs.testing.openapi_contract import ContractViolation

project_threads_emulator = pytest_plugin.project_threads_emulator


@pytest.fixture
def make_emu() -> Iterator[Callable[..., ProjectThreadsEmulator]]:
    started: list[ProjectThreadsEmulator] = []

    def make(**kwargs: Any) -> ProjectThreadsEmulator:
        emu = ProjectThreadsEmulator(**kwargs)
        emu.start()
        started.append(emu)
        return emu

    try:
        yield make
    finally:
        for emu in started:
            emu.stop()
    for emu in started:
        assert check_project_threads_traffic(emu) > 0


def runs_url(emu: ProjectThreadsEmulator, thread_id: str, team: bool = False) -> str:
    prefix = f"/api/teams/{emu.team_id}/projects" if team else "/api/projects"
    return f"{prefix}/{emu.project_id}/threads/{thread_id}/runs"


def http(emu: ProjectThreadsEmulator, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=emu.base_url, headers=headers, timeout=10)


@pytest.mark.parametrize("team", [False, True])
def test_run_lifecycle_and_reply(
    make_emu: Callable[..., ProjectThreadsEmulator], team: bool
) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, run_seconds=10, queue_seconds=1)
    thread_id = emu.create_thread([("user", "earlier"), ("assistant", "earlier reply")])
    with http(emu) as c:
        r = c.post(
            runs_url(emu, thread_id, team), json={"message": "q1", "instructions": "be brief"}
        )
        assert r.status_code == 201
        run = r.json()
        assert run["status"] == "queued" and run["userMessage"] == "q1"
        assert run["instructions"] == "be brief" and run["projectId"] == emu.project_id
        url = f"{runs_url(emu, thread_id, team)}/{run['runId']}"
        clock.advance(2)
        got = c.get(url).json()
        assert got["status"] == "in_progress" and got["userMessage"] is None
        clock.advance(10)
        got = c.get(url).json()
        assert got["status"] == "completed" and got["completedAt"]
        detail = c.get(url.rsplit("/runs/", 1)[0]).json()
        roles = [(m["role"], m["content"]) for m in detail["messages"]]
        assert roles[-2:] == [("user", "q1"), ("assistant", "echo: q1")]
        assert json.loads(detail["messages"][-1]["metadata"]) == {"runId": run["runId"]}
        assert detail["thread"]["messageCount"] == 4


@pytest.mark.parametrize(
    ("script", "status", "error"),
    [({"outcome": "failed", "error": "boom"}, "failed", "boom"),
     ({"outcome": "expired"}, "expired", "The run expired before completion."),
     ({"outcome": "never"}, "in_progress", None)],
)  # fmt: skip
def test_scripted_outcomes(
    make_emu: Callable[..., ProjectThreadsEmulator], script: dict[str, Any], status: str,
    error: str | None,
) -> None:  # fmt: skip
    clock = FakeClock()
    emu = make_emu(clock=clock)
    thread_id = emu.create_thread()
    with http(emu) as c:
        body = {"message": "m", "instructions": f"answer\nemulator: {json.dumps(script)}"}
        run = c.post(runs_url(emu, thread_id), json=body).json()
        clock.advance(60)
        got = c.get(f"{runs_url(emu, thread_id)}/{run['runId']}").json()
        assert got["status"] == status and got["errorMessage"] == error
        if status == "in_progress":  # a second run on a busy thread: the service's 500
            r = c.post(runs_url(emu, thread_id), json={"message": "again"})
            assert r.status_code == 500 and "already has an active run" in r.json()["details"]


@pytest.mark.parametrize(
    ("body", "field", "ok"),
    [({"message": "x" * 4000}, None, True),
     ({"message": "x" * 4001}, "Message", False),
     ({"message": ""}, "Message", False),
     ({}, "Message", False),
     ({"message": "m", "instructions": "i" * 2000}, None, True),
     ({"message": "m", "instructions": "i" * 2001}, "Instructions", False),
     ({"message": "m", "instructions": None}, None, True),
     ({"message": 5}, "$.message", False),
     ({"message": "m", "metadata": {}}, "$.metadata", False)],
)  # fmt: skip
def test_run_request_validation(
    make_emu: Callable[..., ProjectThreadsEmulator], body: dict[str, Any], field: str | None,
    ok: bool,
) -> None:  # fmt: skip
    emu = make_emu(run_seconds=0)
    thread_id = emu.create_thread()
    with http(emu) as c:
        r = c.post(runs_url(emu, thread_id), json=body)
    if ok:
        assert r.status_code == 201, r.text
        return
    problem = r.json()
    assert r.status_code == 400
    assert (
        problem["title"] == "One or more validation errors occurred." and problem["status"] == 400
    )
    assert list(problem["errors"]) == [field]


def test_error_bodies_and_correlation_id(make_emu: Callable[..., ProjectThreadsEmulator]) -> None:
    emu = make_emu(token="jwt-secret")
    thread_id = emu.create_thread()
    correlation = str(uuid.uuid4())
    with http(emu) as anonymous:
        r = anonymous.post(runs_url(emu, thread_id), json={"message": "m"},
                           headers={"X-Correlation-Id": correlation})  # fmt: skip
        assert r.status_code == 401 and r.json() == {"message": "Unauthorized access"}
        assert r.headers["x-correlation-id"] == correlation
    with http(emu, "jwt-secret") as c:
        other = f"/api/projects/{uuid.uuid4()}/threads/{thread_id}/runs"
        assert c.post(other, json={"message": "m"}).json() == {
            "message": "Access denied to project"
        }
        wrong_team = runs_url(emu, thread_id, team=True).replace(emu.team_id, str(uuid.uuid4()))
        assert c.post(wrong_team, json={"message": "m"}).status_code == 403
        r = c.post(runs_url(emu, "thread_missing"), json={"message": "m"})
        assert r.status_code == 404 and r.json() == {"message": "Thread not found"}
        r = c.get(f"{runs_url(emu, thread_id)}/run_missing")
        assert r.status_code == 404 and r.json() == {"message": "Run not found"}
        assert r.headers["x-correlation-id"]  # generated when the client sends none
        emu.inject_faults(rate=1.0, statuses=(500,))
        r = c.post(runs_url(emu, thread_id), json={"message": "m"})
        assert r.status_code == 500
        assert r.json() == {"message": "Failed to create thread run",
                            "details": "Injected fault (HTTP 500)."}  # fmt: skip
        r = c.get(f"{runs_url(emu, thread_id)}/run_x")
        assert r.json()["message"] == "An error occurred while checking the run status"
        emu.clear_faults()
        assert c.get(f"/api/projects/{emu.project_id}/nothing").json()["title"] == "Not Found"


def test_threads_list_and_chat(make_emu: Callable[..., ProjectThreadsEmulator]) -> None:
    emu = make_emu()
    ids = [emu.create_thread([("user", f"t{i}")]) for i in range(5)]
    base = f"/api/teams/{emu.team_id}/projects/{emu.project_id}"
    with http(emu) as c:
        seen, after = [], None
        while True:
            page = c.get(
                f"{base}/threads", params={"limit": 2, **({"after": after} if after else {})}
            ).json()
            seen += [t["threadId"] for t in page["threads"]]
            after = page["nextCursor"]
            if not page["hasMore"]:
                break
        assert seen == list(reversed(ids))
        assert c.get(f"{base}/threads", params={"limit": 0}).status_code == 400
        chat = c.post(f"{base}/chat", json={"message": "hello"}).json()
        assert chat["isNewThread"] and chat["response"] == "echo: hello"
        more = c.post(
            f"{base}/chat", json={"message": "again", "threadId": chat["threadId"]}
        ).json()
        assert not more["isNewThread"]
        assert len(emu.thread_messages(chat["threadId"])) == 4


def test_contract_check_catches_a_bad_request_body(
    project_threads_emulator: ProjectThreadsEmulator,
) -> None:
    emu = project_threads_emulator
    thread_id = emu.create_thread()
    with http(emu) as c:
        assert c.post(runs_url(emu, thread_id), json={"message": "ok"}).status_code == 201
    emu.requests[-1].json = {"message": ""}  # what a client must never send
    with pytest.raises(ContractViolation, match="message"):
        check_project_threads_traffic(emu)
    assert len(emu.runs()) == 1
    emu.reset()
    assert emu.runs() == []
