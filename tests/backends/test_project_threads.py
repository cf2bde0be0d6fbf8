"""The project_threads backend (seed 003) against ProjectThreadsEmulator, traffic checked both ways."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from prefect_agent_runs import ProjectThreadsCredentials, RunRequest, RunStatus
from prefect_agent_runs.backends import registry
from prefect_agent_runs.backends.project_threads import ProjectThreadsClient
from prefect_agent_runs.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    NotSupported,
    ServerError,
    TransportError,
    Unauthorized,
    ValidationError,
)
from prefect_agent_runs.testing import ProjectThreadsEmulator
from prefect_agent_runs.testing.contracts import check_project_threads_traffic

TOKEN = "jwt-token-secret"


@pytest.fixture
def emu() -> Any:
    with ProjectThreadsEmulator(run_seconds=0.05, token=TOKEN) as emulator:
        yield emulator
    assert check_project_threads_traffic(emulator) >= 0  # raises on a mismatch


def credentials(
    emu: ProjectThreadsEmulator, team: bool = False, **kw: Any
) -> ProjectThreadsCredentials:
    return ProjectThreadsCredentials(
        base_url=emu.base_url, token=kw.pop("token", TOKEN), project_id=emu.project_id,
        team_id=emu.team_id if team else None, **kw,
    )  # fmt: skip


@pytest.fixture(params=[False, True], ids=["short-paths", "team-paths"])
async def client(emu: ProjectThreadsEmulator, request: Any) -> AsyncIterator[ProjectThreadsClient]:
    async with credentials(emu, team=request.param).get_client() as c:
        assert isinstance(c, ProjectThreadsClient)
        yield c


def req(thread_id: str, message: str = "hi", instructions: str | None = None) -> RunRequest:
    return RunRequest(assistant_id="asst", thread_id=thread_id, message=message,
                      instructions=instructions)  # fmt: skip


async def test_create_status_wait_and_result(
    emu: ProjectThreadsEmulator, client: ProjectThreadsClient
) -> None:
    thread = emu.create_thread([("user", "before"), ("assistant", "old reply")])
    run = await client.create_run(req(thread, "q1", "be brief"))
    assert run.status is RunStatus.QUEUED or run.status is RunStatus.RUNNING
    done = await client.wait_for_run(run, timeout_seconds=10)
    assert done.status is RunStatus.COMPLETED and done.completed_at is not None
    result = await client.get_result(done)
    assert [m["content"] for m in result.messages] == ["echo: q1"] and result.text == "echo: q1"
    second = await client.wait_for_run(await client.create_run(req(thread, "q2")))
    assert (await client.get_result(second)).text == "echo: q2"
    assert (await client.get_result(done)).text == "echo: q1"  # still the first run's reply
    sent = [r for r in emu.requests if r.method == "POST"]
    assert all(r.headers.get("x-correlation-id") for r in sent)
    if client.prefix.startswith("/api/teams/"):
        assert all(r.path.startswith(f"/api/teams/{emu.team_id}/") for r in emu.requests)


@pytest.mark.parametrize(
    ("instructions", "status", "error"),
    [('emulator: {"outcome": "failed", "error": "boom"}', RunStatus.FAILED, "boom"),
     ('emulator: {"outcome": "expired"}', RunStatus.EXPIRED, "expired")],
)  # fmt: skip
async def test_five_statuses(
    emu: ProjectThreadsEmulator, instructions: str, status: RunStatus, error: str
) -> None:
    async with credentials(emu).get_client() as client:
        run = await client.wait_for_run(
            await client.create_run(req(emu.create_thread(), "m", instructions))
        )
    assert run.status is status and error in (run.error or "")
    assert {s.value for s in ProjectThreadsClient.status_map.values()} == {
        "queued", "running", "completed", "failed", "expired"}  # fmt: skip


@pytest.mark.parametrize(
    ("message", "instructions", "field"),
    [("x" * 4000, None, None), ("x" * 4001, None, "message"), ("", None, "message"),
     ("m", "i" * 2000, None), ("m", "i" * 2001, "instructions")],
)  # fmt: skip
async def test_input_limits_at_and_past(
    emu: ProjectThreadsEmulator, message: str, instructions: str | None, field: str | None
) -> None:
    thread = emu.create_thread()
    async with credentials(emu).get_client() as client:
        before = len(emu.requests)
        if field is None:
            assert (await client.create_run(req(thread, message, instructions))).id
            return
        with pytest.raises(ValidationError, match=field):
            await client.create_run(req(thread, message, instructions))
        assert len(emu.requests) == before  # caught before any request


async def test_error_bodies(emu: ProjectThreadsEmulator) -> None:
    thread = emu.create_thread()
    async with credentials(emu, token="bad-token").get_client() as bad:
        with pytest.raises(Unauthorized, match="Unauthorized access") as info:
            await bad.get_run("run_x", thread_id=thread)
        assert "bad-token" not in str(info.value) and "X-Correlation-Id" in str(info.value)
    other = ProjectThreadsCredentials(base_url=emu.base_url, token=TOKEN,
                                      project_id="5f0c8d7e-1111-4222-8333-444455556666")  # fmt: skip
    async with other.get_client() as c:
        with pytest.raises(Forbidden, match="Access denied to project"):
            await c.get_run("run_x", thread_id=thread)
    async with credentials(emu, max_retries=0).get_client() as client:
        with pytest.raises(NotFound, match="Thread not found"):
            await client.create_run(req("thread_missing"))
        with pytest.raises(NotFound, match="Run not found"):
            await client.get_run("run_missing", thread_id=thread)
        emu.inject_faults(rate=1.0, statuses=(500,), paths=["*/runs/*"], methods=["GET"])
        with pytest.raises(ServerError, match="checking the run status: Injected fault"):
            await client.get_run("run_x", thread_id=thread)
        emu.clear_faults()
        # ProblemDetails 400 with its field errors (sent raw: our client refuses it earlier)
        with pytest.raises(BadRequest) as bad_request:
            await client.transport.request_json(
                "POST", f"{client.prefix}/threads/{thread}/runs", action="raw", json={"message": ""}
            )
        assert bad_request.value.field_errors == {"Message": ["The Message field is required."]}


async def test_no_list_no_cancel_and_thread_required(client: ProjectThreadsClient) -> None:
    with pytest.raises(NotSupported, match="no list"):
        client.list_runs()
    with pytest.raises(NotSupported, match="no cancel endpoint"):
        await client.cancel_run("run_1", thread_id="t")
    with pytest.raises(ValidationError, match="thread_id is required"):
        await client.create_run(RunRequest(assistant_id="a", message="m"))
    assert registry.get("project_threads").capabilities == frozenset()


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.mark.parametrize("run_ids", [True, False])
async def test_lost_create_answer_is_never_resent(
    emu: ProjectThreadsEmulator, run_ids: bool
) -> None:
    emu.message_run_ids = run_ids
    thread = emu.create_thread()
    async with credentials(emu, max_retries=0).get_client() as client:
        emu.inject_faults(rate=1.0, statuses=(502,), methods=["POST"], after_commit=True)
        if run_ids:  # found through the thread's messages: adopted
            run = await client.create_run(req(thread, "lost"))
            assert run.id == emu.runs()[0]["runId"]
        else:
            with pytest.raises(ServerError, match="the run exists, but its id is not known"):
                await client.create_run(req(thread, "lost"))
        emu.clear_faults()
    # a 500 before anything was created: looked for over the window, then sent again
    async with credentials(emu, max_retries=0).get_client(sleep=_no_sleep) as client:
        emu.inject_faults(rate=1.0, statuses=(500,), methods=["POST"])  # nothing created
        with pytest.raises(ServerError, match="gave up after 10 create attempts"):
            await client.create_run(req(emu.create_thread(), "never arrived"))
    assert len(emu.runs()) == 1
    assert sum(1 for r in emu.requests if r.method == "POST") == 1 + 10


async def test_transport_error_on_create_says_it_may_exist(emu: ProjectThreadsEmulator) -> None:
    thread = emu.create_thread()
    async with credentials(emu, max_retries=0, request_timeout_seconds=0.2).get_client() as client:
        emu.inject_faults(rate=1.0, statuses=(), delay_seconds=0.5, methods=["POST"],
                          after_commit=True)  # fmt: skip
        run = await client.create_run(req(thread, "slow"))  # read timeout, then adopted
        assert run.id == emu.runs()[0]["runId"]
        assert json.loads(emu.thread_messages(thread)[0]["metadata"])["runId"] == run.id
    _ = TransportError
