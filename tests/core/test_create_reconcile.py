"""Duplicate-safe create: look the run up after an ambiguous failure before resending."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from prefect_agent_runs.backends.create import create_reconciled
from prefect_agent_runs.errors import (
    AgentRunsError,
    BadRequest,
    Conflict,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
)
from prefect_agent_runs.http import RetryMode, Transport
from prefect_agent_runs.models import METADATA_ITEM_KEY, Run, RunStatus, normalize_status

BACKEND = "testbackend"
BASE = "https://api.example.test"


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_run(run_id: str = "run_1", key: str = "k1") -> Run:
    return Run(
        id=run_id,
        status=RunStatus.QUEUED,
        raw_status="queued",
        backend=BACKEND,
        metadata={METADATA_ITEM_KEY: key},
    )


class Script:
    """send() raises the scripted errors in order, then returns a run; lookup() likewise."""

    def __init__(
        self,
        send_errors: list[AgentRunsError],
        lookups: list[Run | None] | None = None,
    ) -> None:
        self.send_errors = list(send_errors)
        self.lookups = list(lookups or [])
        self.sent = 0
        self.looked_up = 0

    async def send(self) -> Run:
        self.sent += 1
        if self.send_errors:
            raise self.send_errors.pop(0)
        return make_run(f"run_sent_{self.sent}")

    async def lookup(self) -> Run | None:
        self.looked_up += 1
        return self.lookups.pop(0) if self.lookups else None


def ambiguous_timeout() -> TransportError:
    return TransportError("read timeout", backend=BACKEND, reached_server=None)


async def call(script: Script, sleeps: Sleeps, **kwargs: Any) -> Run:
    return await create_reconciled(
        script.send, script.lookup, backend=BACKEND, action="create run", sleep=sleeps, **kwargs
    )


async def test_success_first_time_no_lookup() -> None:
    script, sleeps = Script([]), Sleeps()
    run = await call(script, sleeps)
    assert run.id == "run_sent_1"
    assert (script.sent, script.looked_up) == (1, 0)
    assert sleeps.calls == []


@pytest.mark.parametrize(
    "error",
    [
        TransportError("read timeout", backend=BACKEND, reached_server=None),
        TransportError("odd", backend=BACKEND, reached_server=True),
        ServerError("500", status_code=500, backend=BACKEND),
        ServerError("502", status_code=502, backend=BACKEND),
    ],
    ids=["timeout", "reached", "500", "502"],
)
async def test_ambiguous_then_found_is_adopted(error: AgentRunsError) -> None:
    found = make_run("run_found")
    script, sleeps = Script([error], lookups=[found]), Sleeps()
    run = await call(script, sleeps, backoff_seconds=0.5)
    assert run is found
    assert script.sent == 1
    assert script.looked_up == 1
    assert sleeps.calls == [0.5]  # waited before looking


async def test_ambiguous_then_not_found_is_resent() -> None:
    script, sleeps = Script([ambiguous_timeout()], lookups=[None]), Sleeps()
    run = await call(script, sleeps, lookup_window_seconds=0)
    assert run.id == "run_sent_2"
    assert (script.sent, script.looked_up) == (2, 1)


async def test_lookups_cover_the_window_before_resending() -> None:
    """D5: one lookup 1 s later used to decide; a create the server applies later was sent
    twice. Now the run is looked up with backoff over the whole window first."""
    script, sleeps = Script([ambiguous_timeout()]), Sleeps()
    run = await call(script, sleeps, backoff_seconds=0.5, lookup_window_seconds=30)
    assert run.id == "run_sent_2"
    assert sleeps.calls == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # 31.5 s >= 30 s
    assert (script.sent, script.looked_up) == (2, 7)


async def test_a_create_applied_late_is_found_not_resent() -> None:
    late = make_run("run_late")
    script = Script([ambiguous_timeout()], lookups=[None, None, None, late])
    run = await call(script, Sleeps(), lookup_window_seconds=30)
    assert run is late
    assert (script.sent, script.looked_up) == (1, 4)


async def test_a_failing_lookup_is_looked_again_not_dropped() -> None:
    """D2: one failed lookup used to raise "a run MAY exist" and drop the item."""
    found = make_run("run_found")
    lookups: list[Run | AgentRunsError | None] = [
        ServerError("502", status_code=502, backend=BACKEND),
        TransportError("reset", backend=BACKEND, reached_server=None),
        found,
    ]
    script = Script([ambiguous_timeout()])

    async def lookup() -> Run | None:
        script.looked_up += 1
        item = lookups.pop(0)
        if isinstance(item, AgentRunsError):
            raise item
        return item

    run = await create_reconciled(
        script.send, lookup, backend=BACKEND, action="create run", sleep=Sleeps()
    )
    assert run is found
    assert (script.sent, script.looked_up) == (1, 3)


async def test_a_lookup_refused_for_good_says_a_run_may_exist() -> None:
    script = Script([ambiguous_timeout()])

    async def lookup() -> Run | None:
        raise NotFound("no such assistant", status_code=404, backend=BACKEND)

    with pytest.raises(TransportError, match="a run MAY exist"):
        await create_reconciled(
            script.send, lookup, backend=BACKEND, action="create run", sleep=Sleeps()
        )
    assert script.sent == 1


async def test_a_busy_thread_after_an_ambiguous_create_is_looked_up() -> None:
    """A late first create makes the resend meet a busy thread (409): it is ours."""
    mine = make_run("run_first")
    conflict = Conflict("thread busy", status_code=409, backend=BACKEND)
    script = Script([ambiguous_timeout(), conflict], lookups=[None, mine])
    run = await call(script, Sleeps(), lookup_window_seconds=0)
    assert run is mine
    assert (script.sent, script.looked_up) == (2, 2)


async def test_a_busy_thread_on_the_first_create_is_raised() -> None:
    conflict = Conflict("thread busy", status_code=409, backend=BACKEND)
    script = Script([conflict])
    with pytest.raises(Conflict):
        await call(script, Sleeps())
    assert script.looked_up == 0


@pytest.mark.parametrize(
    "error",
    [
        BadRequest("bad", status_code=400, backend=BACKEND),
        NotFound("no assistant", status_code=404, backend=BACKEND),
        TransportError("refused", backend=BACKEND, reached_server=False),
        RateLimited("quota", status_code=429, backend=BACKEND),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_non_ambiguous_error_is_raised_without_lookup(error: AgentRunsError) -> None:
    script, sleeps = Script([error]), Sleeps()
    with pytest.raises(type(error)) as info:
        await call(script, sleeps)
    assert info.value is error
    assert (script.sent, script.looked_up) == (1, 0)
    assert sleeps.calls == []


async def test_gives_up_after_max_attempts() -> None:
    errors: list[AgentRunsError] = [
        ambiguous_timeout(),
        ServerError("HTTP 502", status_code=502, backend=BACKEND),
        ambiguous_timeout(),
        ambiguous_timeout(),
    ]
    script, sleeps = Script(errors), Sleeps()
    with pytest.raises(TransportError) as info:
        await call(script, sleeps, max_attempts=3, backoff_seconds=1.0, lookup_window_seconds=0)
    assert (script.sent, script.looked_up) == (3, 3)
    assert sleeps.calls == [1.0, 1.0, 1.0]
    message = str(info.value)
    assert "gave up after 3 create attempts" in message
    assert "no run was found" in message
    assert message.startswith("read timeout")


async def test_found_on_a_later_attempt() -> None:
    found = make_run("run_late")
    script = Script([ambiguous_timeout(), ambiguous_timeout()], lookups=[None, found])
    run = await call(script, Sleeps(), max_attempts=3, lookup_window_seconds=0)
    assert run is found
    assert (script.sent, script.looked_up) == (2, 2)


async def test_one_attempt_only() -> None:
    script = Script([ambiguous_timeout()])
    with pytest.raises(TransportError, match="gave up after 1 create attempts"):
        await call(script, Sleeps(), max_attempts=1, lookup_window_seconds=0)
    assert (script.sent, script.looked_up) == (1, 1)


# -- end to end through the transport (respx) -------------------------------------------


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def run_json(run_id: str, key: str, status: str = "queued") -> dict[str, Any]:
    return {"id": run_id, "status": status, "metadata": {METADATA_ITEM_KEY: key}}


def to_run(data: dict[str, Any]) -> Run:
    return Run(
        id=data["id"],
        status=normalize_status("openai_assistants", data["status"]),
        raw_status=data["status"],
        backend=BACKEND,
        metadata=data.get("metadata") or {},
        raw=data,
    )


async def create_via_transport(transport: Transport, key: str, sleeps: Sleeps) -> Run:
    async def send() -> Run:
        data = await transport.request_json(
            "POST",
            "/runs",
            action=f"create run for item {key}",
            mode=RetryMode.CREATE,
            json={"assistant_id": "a1", "metadata": {METADATA_ITEM_KEY: key}},
        )
        return to_run(data)

    async def lookup() -> Run | None:
        page = await transport.request_json(
            "GET", "/runs", action="list runs", params={"order": "desc", "limit": 20}
        )
        for item in page["data"]:
            if item.get("metadata", {}).get(METADATA_ITEM_KEY) == key:
                return to_run(item)
        return None

    return await create_reconciled(
        send,
        lookup,
        backend=BACKEND,
        action=f"create run for item {key}",
        sleep=sleeps,
        lookup_window_seconds=0,
    )


async def test_e2e_timeout_then_lookup_adopts(router: respx.MockRouter) -> None:
    post = router.post("/runs").mock(
        side_effect=[httpx.ReadTimeout("read timed out"), httpx.Response(200, json={})]
    )
    get = router.get("/runs").mock(
        return_value=httpx.Response(
            200,
            json={"data": [run_json("run_other", "k0"), run_json("run_1", "k1", "in_progress")]},
        )
    )
    sleeps = Sleeps()
    async with Transport(backend=BACKEND, base_url=BASE, sleep=sleeps) as transport:
        run = await create_via_transport(transport, "k1", sleeps)
    assert post.call_count == 1
    assert get.call_count == 1
    assert run.id == "run_1"
    assert run.status is RunStatus.RUNNING


async def test_e2e_5xx_then_lookup_adopts(router: respx.MockRouter) -> None:
    post = router.post("/runs").mock(
        return_value=httpx.Response(502, text="<html>502 Bad Gateway</html>")
    )
    router.get("/runs").mock(return_value=httpx.Response(200, json={"data": [run_json("r", "k1")]}))
    sleeps = Sleeps()
    async with Transport(backend=BACKEND, base_url=BASE, sleep=sleeps) as transport:
        run = await create_via_transport(transport, "k1", sleeps)
    assert post.call_count == 1
    assert run.id == "r"


async def test_e2e_timeout_then_nothing_found_resends_once(router: respx.MockRouter) -> None:
    post = router.post("/runs").mock(
        side_effect=[
            httpx.ReadTimeout("read timed out"),
            httpx.Response(200, json=run_json("run_2", "k1")),
        ]
    )
    get = router.get("/runs").mock(return_value=httpx.Response(200, json={"data": []}))
    sleeps = Sleeps()
    async with Transport(backend=BACKEND, base_url=BASE, sleep=sleeps) as transport:
        run = await create_via_transport(transport, "k1", sleeps)
    assert post.call_count == 2
    assert get.call_count == 1
    assert run.id == "run_2"


async def test_e2e_connect_error_is_resent_without_lookup(router: respx.MockRouter) -> None:
    post = router.post("/runs").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=run_json("r", "k1"))]
    )
    get = router.get("/runs").mock(return_value=httpx.Response(200, json={"data": []}))
    sleeps = Sleeps()
    async with Transport(backend=BACKEND, base_url=BASE, sleep=sleeps) as transport:
        run = await create_via_transport(transport, "k1", sleeps)
    assert post.call_count == 2
    assert get.call_count == 0
    assert run.id == "r"
