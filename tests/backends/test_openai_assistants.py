"""The Assistants v2 backend against the local emulator (and respx for scripted answers).

Covers create (new thread / existing thread, duplicate-safe, adopt on "active run"),
get, list (cursor pagination both ways, broken cursors), cancel (cancelling, repeated,
finished), waits (poll hint, tool calls, timeouts), results, streaming, Azure mode, the
retired api.openai.com, and the request bodies against OpenAI's published schema.
No test sleeps for real: runs are driven by a fake clock shared with the emulator.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from prefect_agent_runs.backends.base import Capability, batch_tags
from prefect_agent_runs.backends.openai_assistants import (
    CREATE_ID_KEY,
    DEFAULT_BASE_URL,
    AssistantsClient,
    active_run_id,
)
from prefect_agent_runs.errors import (
    ApiError,
    BadRequest,
    NotFound,
    NotSupported,
    RunRequiresAction,
    RunTimedOut,
    ServerError,
    Unauthorized,
    ValidationError,
)
from prefect_agent_runs.models import RunRequest, RunStatus
from prefect_agent_runs.testing import AssistantsEmulator, FakeClock
from prefect_agent_runs.waiting import PollPolicy

ASSISTANT = "asst_test"


class FakeTime:
    """A fake monotonic clock and a sleep that advances it (no real waiting)."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


def script(**spec: Any) -> dict[str, str]:
    """Run metadata that scripts the emulator's behaviour for that run."""
    return {"emulator": json.dumps(spec)}


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[AssistantsEmulator]:
    with AssistantsEmulator() as emulator:
        yield emulator


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def emu(emulator_server: AssistantsEmulator, fake_time: FakeTime) -> AssistantsEmulator:
    """The module's emulator, reset, on the test's fake clock, runs instantly complete."""
    e = emulator_server
    e.reset()
    e.run_seconds = 0.0
    e.queue_seconds = 0.0
    e.outcome = "completed"
    e.cancel_seconds = 0.0
    e.expires_seconds = 600.0
    e.poll_after_ms = 100
    e.api_key = None
    e.retired = False
    e.clock = fake_time.clock
    return e


@pytest.fixture
async def client(emu: AssistantsEmulator, fake_time: FakeTime) -> AsyncIterator[AssistantsClient]:
    async with AssistantsClient(
        emu.base_url,
        api_key="sk-test-secret-key",
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        max_retries=2,
    ) as c:
        yield c


def req(message: str = "hello", **kwargs: Any) -> RunRequest:
    return RunRequest(assistant_id=ASSISTANT, message=message, **kwargs)


def posts(emu: AssistantsEmulator, route_glob: str = "") -> list[Any]:
    return [r for r in emu.requests if r.method == "POST" and route_glob in r.route]


# -- create, wait, result ----------------------------------------------------------------


async def test_create_on_new_thread_wait_and_result(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    tags = batch_tags("b1", "item-1")
    run = await client.create_run(req("hello", metadata=tags, key="item-1"))
    assert run.thread_id and run.id.startswith("run_")
    assert run.metadata[CREATE_ID_KEY]
    assert run.key == "item-1"
    # a bare thread first (issue 13, D4: a thread left behind by a lost answer is empty
    # and untagged), then the run, carrying the batch tags and the message
    first, second = posts(emu)
    assert first.route == "/threads"
    assert first.json == {}
    assert second.route == f"/threads/{run.thread_id}/runs"
    assert second.json["additional_messages"] == [{"role": "user", "content": "hello"}]
    assert {k: second.json["metadata"][k] for k in tags} == tags
    # every call carries the beta header and the bearer key
    assert all(r.headers.get("openai-beta") == "assistants=v2" for r in emu.requests)
    assert all(r.headers.get("authorization") == "<redacted>" for r in emu.requests)

    done = await client.wait_for_run(run, timeout_seconds=60)
    assert done.status is RunStatus.COMPLETED
    assert done.completed_at is not None and done.created_at is not None
    result = await client.get_result(done)
    assert result.text == "echo: hello"
    assert result.run_id == run.id and result.values is None
    assert [m["role"] for m in result.messages] == ["assistant"]


async def test_create_on_existing_thread_passes_options(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    thread = await client.create_thread(metadata={"owner": "me"})
    run = await client.create_run(
        req(
            "second",
            thread_id=thread["id"],
            instructions="Be brief.",
            options={"model": "gpt-4o-mini", "temperature": 0.2, "additional_instructions": "x"},
        )
    )
    body = posts(emu, "/runs")[-1].json
    assert body["additional_messages"] == [{"role": "user", "content": "second"}]
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.2
    assert body["instructions"] == "Be brief."
    assert run.raw["model"] == "gpt-4o-mini"
    done = await client.wait_for_run(run.id, thread_id=thread["id"])
    assert (await client.get_result(done)).text == "echo: second"


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({f"k{i}": "v" for i in range(16)}, "16"),  # + our marker = 17 keys
        ({"k" * 65: "v"}, "k" * 65),
        ({"count": 3}, "'count'"),
        ({"long": "x" * 513}, "'long'"),
    ],
)
async def test_metadata_limits_checked_before_sending(
    client: AssistantsClient, emu: AssistantsEmulator, metadata: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await client.create_run(req(metadata=metadata))
    assert named in str(info.value)
    assert emu.requests == []


async def test_unknown_option_and_bad_ids_rejected(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    with pytest.raises(ValidationError, match="stream_run"):
        await client.create_run(req(options={"stream": True}))
    with pytest.raises(ValidationError, match="tool_resources"):
        await client.create_run(req(thread_id="thread_1", options={"tool_resources": {}}))
    with pytest.raises(ValidationError, match="not a valid id"):
        await client.get_run("run_1", thread_id="a/b")
    with pytest.raises(ValidationError, match="thread_id"):
        await client.get_run("run_1")
    assert emu.requests == []


async def test_all_nine_statuses(
    client: AssistantsClient, emu: AssistantsEmulator, fake_time: FakeTime
) -> None:
    scripts = {
        "queued": script(queue_seconds=100, seconds=100),
        "in_progress": script(seconds=100),
        "requires_action": script(outcome="requires_action"),
        "cancelling": script(outcome="never", cancel_seconds=100),
        "cancelled": script(outcome="never"),
        "completed": script(),
        "failed": script(outcome="failed", error="boom"),
        "expired": script(outcome="expired"),
        "incomplete": script(outcome="incomplete"),
    }
    runs = {name: await client.create_run(req(metadata=meta)) for name, meta in scripts.items()}
    await client.cancel_run(runs["cancelling"].id, thread_id=runs["cancelling"].thread_id)
    await client.cancel_run(runs["cancelled"].id, thread_id=runs["cancelled"].thread_id)
    seen = {}
    for name, run in runs.items():
        now = await client.get_run(run.id, thread_id=run.thread_id)
        assert now.raw_status == name
        seen[name] = now
    assert {r.status for r in seen.values()} == {
        RunStatus.QUEUED,
        RunStatus.RUNNING,
        RunStatus.REQUIRES_ACTION,
        RunStatus.CANCELLING,
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.EXPIRED,
        RunStatus.INCOMPLETE,
    }
    assert seen["failed"].error == "server_error: boom"
    assert seen["incomplete"].error == "incomplete: max_completion_tokens"
    assert seen["cancelled"].completed_at is not None
    assert seen["queued"].started_at is None and seen["in_progress"].started_at is not None


# -- pagination ----------------------------------------------------------------------------


async def test_pagination_250_runs_both_orders(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    thread = await client.create_thread()
    tid = thread["id"]
    created = [(await client.create_run(req(str(i), thread_id=tid))).id for i in range(250)]
    assert len(set(created)) == 250

    emu.requests.clear()
    page = await client.list_runs(thread_id=tid, limit=100)  # desc by default
    assert [r.id for r in await page.get_all()] == created[::-1]
    lists = [r for r in emu.requests if r.method == "GET"]
    assert len(lists) == 3  # 100 + 100 + 50, stops on has_more false
    assert lists[1].query["after"] == created[::-1][99]

    asc = [r.id async for r in await client.list_runs(thread_id=tid, limit=100, order="asc")]
    assert asc == created
    # the call itself iterates too (the seed's PagePromise), and get_all() reads every page
    assert [r.id async for r in client.list_runs(thread_id=tid, limit=100, order="asc")] == created
    assert len(await client.list_runs(thread_id=tid, limit=100).get_all()) == 250

    # pages of 7, newest first, from the middle
    after = [r.id async for r in await client.list_runs(thread_id=tid, limit=7, after=created[100])]
    assert after == created[:100][::-1]

    # backwards with "before": pages walk toward the start of the list
    emu.requests.clear()
    page = await client.list_runs(thread_id=tid, limit=100, order="asc", before=created[-1])
    pages = [p.items async for p in page.iter_pages()]
    assert [len(p) for p in pages] == [100, 100, 49]
    assert pages[0] == [r for r in pages[0]]  # each page is in list order
    assert [r.id for r in pages[0]] == created[149:249]
    assert sorted(r.id for p in pages for r in p) == sorted(created[:249])
    assert emu.requests[1].query["before"] == created[149]

    first = await client.list_runs(thread_id=tid, limit=10)
    assert len(first.items) == 10 and first.has_next_page()
    assert len((await first.next_page()).items) == 10
    assert len(await first.get_all(max_items=25)) == 25


def _run_json(run_id: str, status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {
        "id": run_id,
        "object": "thread.run",
        "created_at": 1_700_000_000,
        "thread_id": "thread_1",
        "assistant_id": ASSISTANT,
        "status": status,
        "metadata": {},
        **extra,
    }


@pytest.fixture
async def mocked() -> AsyncIterator[tuple[respx.MockRouter, AssistantsClient]]:
    fake = FakeTime()
    with respx.mock(base_url="http://test/v1", assert_all_called=False) as router:
        async with AssistantsClient(
            "http://test/v1",
            api_key="sk-mock-secret",
            http_client=httpx.AsyncClient(base_url="http://test/v1"),
            clock=fake.clock,
            sleep=fake.sleep,
        ) as c:
            yield router, c


async def test_pagination_without_has_more_stops_on_short_page(
    mocked: tuple[respx.MockRouter, AssistantsClient],
) -> None:
    router, client = mocked
    pages = {
        None: [_run_json("run_1"), _run_json("run_2")],
        "run_2": [_run_json("run_3")],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        return httpx.Response(
            200, json={"object": "list", "data": pages[after]}
        )  # Cortex: no cursors

    route = router.get("/threads/thread_1/runs").mock(side_effect=answer)
    runs = await (await client.list_runs(thread_id="thread_1", limit=2)).get_all()
    assert [r.id for r in runs] == ["run_1", "run_2", "run_3"]
    assert route.call_count == 2


async def test_pagination_prefers_last_id_and_stops_on_repeated_ids(
    mocked: tuple[respx.MockRouter, AssistantsClient],
) -> None:
    router, client = mocked
    calls: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        calls.append(after)
        # composite cursors (cortex-js); the second page repeats the first (a broken server)
        data = [_run_json("run_1"), _run_json("run_2")]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "first_id": "c_1",
                "last_id": "c_2",
                "has_more": True,
            },
        )

    router.get("/threads/thread_1/runs").mock(side_effect=answer)
    runs = await (await client.list_runs(thread_id="thread_1", limit=2)).get_all()
    assert [r.id for r in runs] == ["run_1", "run_2"]
    assert calls == [None, "c_2"]  # last_id, not data[-1].id; stopped after the repeat


async def test_limit_is_checked(client: AssistantsClient) -> None:
    with pytest.raises(ValidationError, match="limit"):
        await client.list_runs(thread_id="thread_1", limit=500)


# -- tool calls ------------------------------------------------------------------------------


async def test_requires_action_without_handler_names_tools(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    run = await client.create_run(req(metadata=script(outcome="requires_action", tool="lookup")))
    with pytest.raises(RunRequiresAction) as info:
        await client.wait_for_run(run)
    assert info.value.tool_names == ["lookup"]
    assert "lookup" in str(info.value) and "tool_handler" in str(info.value)
    assert info.value.run.status is RunStatus.REQUIRES_ACTION


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_requires_action_with_handler(
    client: AssistantsClient, emu: AssistantsEmulator, kind: str
) -> None:
    calls: list[dict[str, Any]] = []

    def handle(call: dict[str, Any]) -> str:
        calls.append(call)
        args = json.loads(call["function"]["arguments"])
        return f"sunny in {args['city']}"

    async def ahandle(call: dict[str, Any]) -> str:
        return handle(call)

    run = await client.create_run(
        req("Paris", metadata=script(outcome="requires_action", seconds=1))
    )
    done = await client.wait_for_run(run, tool_handler=handle if kind == "sync" else ahandle)
    assert done.status is RunStatus.COMPLETED
    assert len(calls) == 1 and calls[0]["function"]["name"] == "get_weather"
    assert (await client.get_result(done)).text == "echo: Paris [tool: sunny in Paris]"
    submits = posts(emu, "/submit_tool_outputs")
    assert len(submits) == 1
    assert submits[0].json["tool_outputs"][0]["output"] == "sunny in Paris"


async def test_refused_tool_outputs_reread_the_run(
    mocked: tuple[respx.MockRouter, AssistantsClient],
) -> None:
    router, client = mocked
    action = {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]
        },
    }
    router.get("/threads/thread_1/runs/run_1").mock(
        side_effect=[  # read by wait_for_run(id), by the poll, then after the refusal
            httpx.Response(200, json=_run_json("run_1", "requires_action", required_action=action)),
            httpx.Response(200, json=_run_json("run_1", "requires_action", required_action=action)),
            httpx.Response(200, json=_run_json("run_1", "expired")),
        ]
    )
    submit = router.post("/threads/thread_1/runs/run_1/submit_tool_outputs").mock(
        return_value=httpx.Response(
            400, json={"error": {"message": 'Runs in status "expired" do not accept tool outputs.'}}
        )
    )
    run = await client.wait_for_run("run_1", thread_id="thread_1", tool_handler=lambda c: "x")
    assert run.status is RunStatus.EXPIRED
    assert submit.call_count == 1


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_cancelling_repeated_and_wait(
    client: AssistantsClient, emu: AssistantsEmulator, fake_time: FakeTime
) -> None:
    run = await client.create_run(req(metadata=script(outcome="never", cancel_seconds=5)))
    first = await client.cancel_run(run.id, thread_id=run.thread_id)
    assert first.status is RunStatus.CANCELLING
    again = await client.cancel_run(run.id, thread_id=run.thread_id)  # the server says 400
    assert again.status is RunStatus.CANCELLING
    assert any(r.status == 400 for r in emu.requests if r.route.endswith("/cancel"))
    done = await client.cancel_run(run.id, thread_id=run.thread_id, wait=True)
    assert done.status is RunStatus.CANCELLED
    assert sum(fake_time.sleeps) == pytest.approx(5, abs=0.2)
    assert (await client.cancel_run(run.id, thread_id=run.thread_id)).status is RunStatus.CANCELLED


async def test_cancel_finished_run_returns_it(client: AssistantsClient) -> None:
    run = await client.create_run(req())
    done = await client.wait_for_run(run)
    again = await client.cancel_run(done.id, thread_id=done.thread_id)
    assert again.status is RunStatus.COMPLETED and again.id == done.id


async def test_cancel_unknown_run_raises(client: AssistantsClient) -> None:
    thread = await client.create_thread()
    with pytest.raises(NotFound):
        await client.cancel_run("run_nope", thread_id=thread["id"])


# -- waiting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("poll_after_ms", "gets"), [(500, 7), (1000, 4), (250, 13)])
async def test_poll_after_header_is_honored(
    client: AssistantsClient,
    emu: AssistantsEmulator,
    fake_time: FakeTime,
    poll_after_ms: int,
    gets: int,
) -> None:
    emu.poll_after_ms = poll_after_ms
    run = await client.create_run(req(metadata=script(seconds=3)))
    emu.requests.clear()
    fake_time.sleeps.clear()
    done = await client.wait_for_run(run)
    assert done.status is RunStatus.COMPLETED
    polls = [r for r in emu.requests if r.method == "GET"]
    assert len(polls) == gets
    assert fake_time.sleeps == [poll_after_ms / 1000] * (gets - 1)


async def test_wait_without_hint_backs_off(
    client: AssistantsClient, emu: AssistantsEmulator, fake_time: FakeTime
) -> None:
    emu.poll_after_ms = None
    run = await client.create_run(req(metadata=script(seconds=30)))
    fake_time.sleeps.clear()
    policy = PollPolicy(poll_interval_seconds=1.0, max_poll_interval_seconds=8.0, jitter=0.0)
    done = await client.wait_for_run(run, policy=policy)
    assert done.status is RunStatus.COMPLETED
    assert fake_time.sleeps[:3] == [1.0, 1.5, 2.25]
    assert max(fake_time.sleeps) == 8.0


async def test_wait_timeout_cancels_remote_run(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    run = await client.create_run(req(metadata=script(outcome="never")))
    with pytest.raises(RunTimedOut) as info:
        await client.wait_for_run(run, timeout_seconds=5)
    assert info.value.cancelled
    now = await client.get_run(run.id, thread_id=run.thread_id)
    assert now.status is RunStatus.CANCELLED


async def test_wait_rides_out_transient_errors(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    run = await client.create_run(req(metadata=script(seconds=2)))
    emu.inject_faults(rate=0.5, statuses=(429, 500, 502, 503), seed=3, methods=["GET"])
    done = await client.wait_for_run(run)
    assert done.status is RunStatus.COMPLETED
    assert any(r.fault for r in emu.requests)


async def test_wait_past_expires_at_keeps_polling(
    client: AssistantsClient, emu: AssistantsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.expires_seconds = -10  # expires_at already in the past on the wall clock
    run = await client.create_run(req(metadata=script(seconds=2)))
    with caplog.at_level("WARNING"):
        done = await client.wait_for_run(run)
    assert done.status is RunStatus.COMPLETED
    assert sum("expires_at" in r.getMessage() for r in caplog.records) == 1


# -- duplicate-safe create ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502])
async def test_ambiguous_create_adopts_the_committed_run(
    client: AssistantsClient, emu: AssistantsEmulator, status: int
) -> None:
    emu.inject_faults(
        rate=1.0, statuses=(status,), paths=["/threads/*/runs"], methods=["POST"], after_commit=True
    )
    run = await client.create_run(req())
    assert run.thread_id is not None
    emu.clear_faults()
    on_thread = emu.runs(run.thread_id)
    assert [r["id"] for r in on_thread] == [run.id]  # exactly one run exists
    assert len(posts(emu, "/runs")) == 1


async def test_create_adopts_own_active_run_from_400(
    mocked: tuple[respx.MockRouter, AssistantsClient],
) -> None:
    router, client = mocked
    sent: list[dict[str, Any]] = []

    def create(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        if len(sent) == 1:
            return httpx.Response(500, json={"error": {"message": "oops", "type": "server_error"}})
        return httpx.Response(
            400,
            json={
                "error": {
                    "message": "Thread thread_1 already has an active run run_abc.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )

    router.post("/threads/thread_1/runs").mock(side_effect=create)
    # the lookup after the 500 sees nothing yet (a lagging server)
    router.get("/threads/thread_1/runs").mock(
        return_value=httpx.Response(
            200,
            json={
                "object": "list",
                "data": [],
                "first_id": None,
                "last_id": None,
                "has_more": False,
            },
        )
    )
    router.get("/threads/thread_1/runs/run_abc").mock(
        side_effect=lambda request: httpx.Response(
            200, json=_run_json("run_abc", "queued", metadata=sent[0]["metadata"])
        )
    )
    run = await client.create_run(req(thread_id="thread_1"))
    assert run.id == "run_abc"
    assert len(sent) == 2 and sent[0]["metadata"] == sent[1]["metadata"]


async def test_create_on_busy_thread_names_the_other_run(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    first = await client.create_run(req(metadata=script(outcome="never")))
    with pytest.raises(BadRequest) as info:
        await client.create_run(req(thread_id=first.thread_id))
    message = str(info.value)
    assert first.id in message and "cancel_run" in message and "did not start" in message
    assert len(emu.runs(first.thread_id)) == 1


def test_active_run_id_parsing() -> None:
    assert active_run_id("Thread thread_1 already has an active run run_XYZ.") == "run_XYZ"
    assert active_run_id("Can't add messages to thread_1 while a run run_9 is active.") == "run_9"
    assert active_run_id("Missing required parameter") is None


async def test_thread_create_is_retried_and_starts_no_run_until_it_succeeds(
    mocked: tuple[respx.MockRouter, AssistantsClient],
) -> None:
    """A lost answer to POST /threads is retried: a spare empty thread starts no work."""
    router, client = mocked
    thread = {"id": "thread_1", "object": "thread", "created_at": 1, "metadata": {}}
    route = router.post("/threads").mock(
        side_effect=[httpx.ReadTimeout("lost"), httpx.Response(200, json=thread)]
    )
    runs = router.post(path__regex=r"/threads/thread_1/runs$").mock(
        return_value=httpx.Response(200, json=_run_json("run_1", "queued", thread_id="thread_1"))
    )
    run = await client.create_run(req())
    assert route.call_count == 2 and runs.call_count == 1 and run.id == "run_1"


# -- find ----------------------------------------------------------------------------------


async def test_find_run_by_batch_key_on_known_thread(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    thread = await client.create_thread()
    tags = batch_tags("batch-9", "k1")
    request = req(thread_id=thread["id"], metadata=tags, key="k1")
    assert await client.find_run(request) is None
    run = await client.create_run(request)
    await client.wait_for_run(run)
    await client.create_run(req(thread_id=thread["id"], metadata=batch_tags("batch-9", "k2")))
    found = await client.find_run(request)
    assert found is not None and found.id == run.id
    assert await client.find_run(req(metadata=tags)) is None  # no thread: cannot look up
    # only on a known thread, so the backend does not claim FIND_BY_KEY: batches use the ledger
    assert Capability.FIND_BY_KEY not in client.capabilities


# -- streaming -------------------------------------------------------------------------------


async def test_stream_run_yields_events_until_done(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    emu.clock = FakeClock()  # the stream is paced by the emulator itself
    events = [e async for e in client.stream_run(req("streamed"))]
    names = [e.event for e in events]
    assert names[0] == "thread.run.created"
    assert names[-1] == "thread.run.completed"
    assert "done" not in names
    assert events[-1].data["status"] == "completed"
    delta = next(e for e in events if e.event == "thread.message.delta")
    assert delta.data["delta"]["content"][0]["text"]["value"] == "echo: streamed"
    body = posts(emu, "/runs")[-1].json
    assert body["stream"] is True


async def test_stream_events_of_existing_run_not_supported(client: AssistantsClient) -> None:
    run = await client.create_run(req())
    with pytest.raises(NotSupported, match="stream_run"):
        client.stream_events(run)
    events = [e async for e in client.stream_events(req("via request"))]
    assert events[-1].event == "thread.run.completed"


async def test_stream_error_event_raises(
    mocked: tuple[respx.MockRouter, AssistantsClient],
) -> None:
    router, client = mocked
    sse = (
        'event: thread.run.created\ndata: {"id": "run_1", "status": "queued"}\n\n'
        'event: error\ndata: {"error": {"message": "the model is overloaded", '
        '"type": "server_error", "code": "server_error"}}\n\n'
    )
    router.post("/threads/thread_1/runs").mock(
        return_value=httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})
    )
    seen = []
    with pytest.raises(ApiError, match="the model is overloaded"):
        async for event in client.stream_run(req(thread_id="thread_1")):
            seen.append(event.event)
    assert seen == ["thread.run.created"]


# -- Azure, auth, retired API ---------------------------------------------------------------


async def test_azure_mode_headers_and_query(emu: AssistantsEmulator) -> None:
    emu.api_key = "azure-secret-key"
    async with AssistantsClient(
        emu.azure_endpoint + "/openai",
        api_key="azure-secret-key",
        api_version="2024-05-01-preview",
        organization="org_1",
        project="proj_1",
        headers={"X-Extra": "1"},
    ) as client:
        run = await client.create_run(req("azure"))
        done = await client.wait_for_run(run)
        assert (await client.get_result(done)).text == "echo: azure"
        await (await client.list_runs(thread_id=run.thread_id)).get_all()
    assert emu.requests
    for r in emu.requests:
        assert r.path.startswith("/openai/threads")
        assert r.query["api-version"] == "2024-05-01-preview"
        assert r.headers["api-key"] == "<redacted>"  # accepted: the emulator checks the key
        assert "authorization" not in r.headers
        assert r.headers["openai-beta"] == "assistants=v2"
        assert r.headers["openai-organization"] == "org_1"
        assert r.headers["openai-project"] == "proj_1"
        assert r.headers["x-extra"] == "1"


async def test_wrong_key_is_unauthorized_and_redacted(emu: AssistantsEmulator) -> None:
    emu.api_key = "the-right-key"
    async with AssistantsClient(emu.base_url, api_key="sk-wrong-secret-123456") as client:
        with pytest.raises(Unauthorized) as info:
            await client.create_thread()
    assert "sk-wrong-secret-123456" not in str(info.value)
    assert "api_key" in str(info.value)


async def test_retired_openai_host_explains_404() -> None:
    with respx.mock(base_url=DEFAULT_BASE_URL, assert_all_called=True) as router:
        route = router.get("/threads/thread_1/runs/run_1").mock(
            return_value=httpx.Response(
                404,
                json={
                    "error": {
                        "message": "Invalid URL (GET /v1/threads/thread_1/runs/run_1)",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )
        )
        async with AssistantsClient(api_key="sk-live-secret-abcdef") as client:
            with pytest.raises(NotFound) as info:
                await client.get_run("run_1", thread_id="thread_1")
    message = str(info.value)
    assert "retired by OpenAI on 2026-08-26" in message
    assert "Responses API" in message and "Azure" in message
    assert "sk-live-secret-abcdef" not in message
    assert route.call_count == 1  # a 404 is never retried


async def test_emulator_retired_mode_gives_not_found(
    client: AssistantsClient, emu: AssistantsEmulator
) -> None:
    emu.retired = True
    with pytest.raises(NotFound, match="2026-08-26"):
        await client.create_run(req())
    assert len(emu.requests) == 1


async def test_non_json_answer_is_reported(
    mocked: tuple[respx.MockRouter, AssistantsClient],
) -> None:
    router, client = mocked
    router.get("/threads/thread_1/runs/run_1").mock(
        return_value=httpx.Response(200, text="<html>proxy login</html>")
    )
    with pytest.raises(ServerError, match="not JSON"):
        await client.get_run("run_1", thread_id="thread_1")


# -- contract ------------------------------------------------------------------------------


async def test_request_bodies_match_openai_schema(
    client: AssistantsClient, emu: AssistantsEmulator, openai_openapi_path: Path
) -> None:
    from prefect_agent_runs.testing.openapi_contract import OpenApiContract

    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    options = {
        "model": "gpt-4o",
        "tools": [tool],
        "temperature": 0.5,
        "top_p": 0.9,
        "max_completion_tokens": 512,
        "truncation_strategy": {"type": "last_messages", "last_messages": 5},
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": "auto",
    }
    meta = {**batch_tags("b", "k", "flow-1"), **script(outcome="requires_action")}
    run = await client.create_run(
        req("hi", metadata=meta, instructions="x", options={**options, "tool_resources": {}})
    )
    await client.wait_for_run(run, tool_handler=lambda call: "out")
    second = await client.create_run(
        req("again", thread_id=run.thread_id, options={"additional_instructions": "y", **options})
    )
    await client.cancel_run(second.id, thread_id=second.thread_id)
    third = await client.create_thread_and_run(req("one-shot", options={"tool_resources": {}}))
    assert third.thread_id
    emu.clock = FakeClock()
    [e async for e in client.stream_run(req("streamed", thread_id=run.thread_id))]

    contract = OpenApiContract(openai_openapi_path)
    checked = set()
    for record in emu.requests:
        if record.method != "POST" or record.json is None:
            continue
        template = contract.match_path(record.path)
        assert template is not None, record.path
        contract.validate_request("POST", template, record.json)
        checked.add(template)
    assert checked == {
        "/threads",
        "/threads/runs",
        "/threads/{thread_id}/runs",
        "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
    }
