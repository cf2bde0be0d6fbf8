"""The LangGraph backend against the REAL LangGraph Agent Server (``langgraph dev``).

Every operation of seeds 001 / 004 (create, createBatch, get, list, join, joinStream,
stream, wait, cancel, delete) plus threads, results, errors, duplicate-safe create and
waits that ride out a flaky network. Faults are injected by wrapping the real HTTP
transport, so the server is real and only the network misbehaves.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from prefect_agent_runs.backends.base import batch_tags, derived_thread_id
from prefect_agent_runs.backends.langgraph import LangGraphClient
from prefect_agent_runs.errors import BadRequest, Conflict, NotFound, RunTimedOut, TransportError
from prefect_agent_runs.models import RunRequest, RunStatus

pytestmark = pytest.mark.langgraph

GRAPH = "echo"


def say(text: str, **controls: Any) -> RunRequest:
    """A request for the echo graph: reply "echo: <text>", controlled by sleep/fail keys."""
    return RunRequest(
        assistant_id=GRAPH,
        input={"messages": [{"role": "user", "content": text}], **controls},
    )


class FaultyTransport(httpx.AsyncBaseTransport):
    """Forwards to the real server; a rule may replace or break chosen answers."""

    def __init__(self, rule: Callable[[httpx.Request, int], str | None]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.rule = rule
        self.calls: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path))
        n = sum(1 for c in self.calls if c == (request.method, request.url.path))
        action = self.rule(request, n)
        if action == "502-html":
            return httpx.Response(502, html="<html><body><h1>502 Bad Gateway</h1></body></html>")
        response = await self.inner.handle_async_request(request)
        if action == "timeout-after-send":
            await response.aread()
            raise httpx.ReadTimeout("injected: the answer was lost", request=request)
        if action and action.startswith("drop-after:"):
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                stream=_DroppingStream(response, int(action.split(":")[1])),
            )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _DroppingStream(httpx.AsyncByteStream):
    """Passes ``n`` SSE events through, then breaks the connection."""

    def __init__(self, response: httpx.Response, n: int) -> None:
        self.response = response
        self.n = n

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.response.aiter_raw():
            yield chunk
            seen += chunk.count(b"\nid: ") + chunk.startswith(b"id: ")
            if seen >= self.n:
                break
        await self.response.aclose()
        raise httpx.ReadError("injected: connection dropped mid-stream")

    async def aclose(self) -> None:
        await self.response.aclose()


@pytest.fixture
async def client(langgraph_url: str) -> AsyncIterator[LangGraphClient]:
    async with LangGraphClient(langgraph_url) as c:
        yield c


def faulty_client(
    url: str, rule: Callable[[httpx.Request, int], str | None]
) -> tuple[LangGraphClient, FaultyTransport]:
    transport = FaultyTransport(rule)
    http = httpx.AsyncClient(base_url=url, transport=transport, timeout=30)
    return LangGraphClient(url, http_client=http), transport


# -- create / wait / join / result ---------------------------------------------------


async def test_create_on_new_thread_wait_joins_and_result(client: LangGraphClient) -> None:
    run = await client.create_run(say("hi").with_metadata({"team": "data"}))
    assert run.status in (RunStatus.QUEUED, RunStatus.RUNNING)
    assert run.thread_id and run.metadata["team"] == "data"
    changes: list[RunStatus] = []
    done = await client.wait_for_run(run, on_change=lambda r: changes.append(r.status))
    assert done.status is RunStatus.COMPLETED and done.raw_status == "success"
    assert changes[-1] is RunStatus.COMPLETED
    values = await client.join(done)
    assert values["reply"] == "echo: hi"
    result = await client.get_result(done)
    assert result.text == "echo: hi" and result.values and result.values["reply"] == "echo: hi"
    assert [m["type"] for m in result.messages] == ["human", "ai"]


async def test_wait_uses_join_not_polling(client: LangGraphClient) -> None:
    run = await client.create_run(say("slow", sleep_seconds=1.0))
    before = client.transport.stats.requests
    done = await client.wait_for_run(run)
    # one join (long poll) whatever the run's duration, and the bulk check that its
    # thread was not interrupted (shared by every join that ends within 0.1 s)
    assert client.transport.stats.requests - before == 2
    assert done.status is RunStatus.COMPLETED
    # the join's answer holds the result: no read of the thread's state
    result = await client.get_result(done)
    assert client.transport.stats.requests - before == 2
    assert result.source == "join" and result.text == "echo: slow"
    # asked again (the join's answer is handed out once), the state is read and says so
    again = await client.get_result(done)
    assert again.source == "state" and again.text == "echo: slow"
    assert client.transport.stats.requests - before == 3


async def test_finished_joins_share_one_status_check(client: LangGraphClient) -> None:
    runs = [await client.create_run(say(f"r{i}", sleep_seconds=0.5)) for i in range(5)]
    for run in runs:  # every run ends before the joins are sent
        await client.join(run)
    before = client.transport.stats.requests
    done = await asyncio.gather(*(client.wait_for_run(r) for r in runs))
    assert all(d.status is RunStatus.COMPLETED for d in done)
    assert client.transport.stats.requests - before == 5 + 1


async def test_bulk_watch_sees_many_ends_in_few_requests(client: LangGraphClient) -> None:
    """``watch_many`` (the batch engine's sweeper): idle threads answer with their values,
    failed and cancelled runs are read for their exact status."""
    ok = [await client.create_run(say(f"ok{i}", sleep_seconds=0.3)) for i in range(6)]
    bad = await client.create_run(say("bad", fail=True))
    stopped = await client.create_run(say("stop", sleep_seconds=5.0))
    await client.cancel_run(stopped.id, thread_id=stopped.thread_id, wait=True)
    alive = {r.id: r for r in [*ok, bad, stopped]}
    ended: dict[str, Any] = {}
    before = client.transport.stats.requests
    for _ in range(100):
        if not alive:
            break
        for run in await client.watch_many(list(alive.values())):
            ended[run.id] = run
            alive.pop(run.id)
        client._other_sweep = float("-inf")  # let every sweep look for other ends (no clock)
        await asyncio.sleep(0.1)
    assert not alive
    sweeps = client.transport.stats.requests - before
    assert all(ended[r.id].status is RunStatus.COMPLETED for r in ok)
    assert ended[bad.id].status is RunStatus.FAILED
    assert "echo graph failed as requested" in str(ended[bad.id].error)
    assert ended[stopped.id].status is RunStatus.INTERRUPTED
    result = await client.get_result(ended[ok[0].id])
    assert result.source == "search" and result.text == "echo: ok0"
    # a sweep is one or two searches (plus a read per run that did not succeed)
    assert client.transport.stats.requests - before == sweeps
    assert sweeps <= 2 * 100 + 2


async def test_run_items_watches_langgraph_runs_in_bulk(client: LangGraphClient) -> None:
    from prefect_agent_runs.batch import run_items

    batch = f"b-{uuid.uuid4().hex[:8]}"
    requests = [
        say(f"i{i}", sleep_seconds=0.2)
        .model_copy(update={"key": f"k{i}"})
        .with_metadata(batch_tags(batch, f"k{i}"))
        for i in range(20)
    ]
    before = client.transport.stats.requests
    outcomes = await run_items(client, requests, policy=client.policy, fresh=True)
    assert [o.ok for o in outcomes] == [True] * 20
    assert [o.result.text for o in outcomes if o.result] == [f"echo: i{i}" for i in range(20)]
    assert all(o.result and o.result.source == "search" for o in outcomes)
    # 20 creates; the sweeps answer for all the runs at once (no join, no state read)
    sent = client.transport.stats.requests - before
    assert 20 < sent < 20 + 40


async def test_wait_confirms_an_unclear_join_with_a_read(client: LangGraphClient) -> None:
    run = await client.create_run(say("slow", sleep_seconds=5.0))
    await client.cancel_run(run.id, thread_id=run.thread_id, wait=True)
    done = await client.wait_for_run(run)
    # the join of a cancelled run answers no values, or the values it reached (then the
    # thread is found interrupted): either way the run is read
    assert done.status is RunStatus.INTERRUPTED
    confirmed = await client.wait_for_run(run, confirm_status=True)
    assert confirmed.status is RunStatus.INTERRUPTED


async def test_create_on_existing_thread_with_options(client: LangGraphClient) -> None:
    thread = await client.create_thread(metadata={"purpose": "test"})
    # options reach the server unchanged: it judges the webhook itself (and refuses a
    # loopback one; a public one would make this machine call out, which tests must not)
    hooked = say("first").model_copy(
        update={"thread_id": thread["thread_id"], "options": {"webhook": "http://127.0.0.1:9/h"}}
    )
    with pytest.raises(BadRequest, match="Webhook host blocked"):
        await client.create_run(hooked)
    request = say("first").model_copy(
        update={"thread_id": thread["thread_id"], "options": {"multitask_strategy": "reject"}}
    )
    run = await client.create_run(request)
    assert run.thread_id == thread["thread_id"]
    assert run.raw["multitask_strategy"] == "reject"
    await client.wait_for_run(run)
    # a second run on the same thread, enqueued behind nothing: completes with history
    second = await client.create_run(
        say("second").model_copy(update={"thread_id": thread["thread_id"]})
    )
    await client.wait_for_run(second)
    result = await client.get_result(second)
    assert result.text == "echo: second" and len(result.messages) == 4


async def test_busy_thread_rejects_second_run_clearly(client: LangGraphClient) -> None:
    first = await client.create_run(say("busy", sleep_seconds=3))
    busy = say("again").model_copy(
        update={"thread_id": first.thread_id, "options": {"multitask_strategy": "reject"}}
    )
    with pytest.raises(Conflict) as info:
        await client.create_run(busy)
    assert info.value.status_code == 409
    assert "langgraph" in str(info.value) and str(first.thread_id) in str(info.value)
    # the refused create was not retried (409 is never retried for a create)
    assert client.transport.stats.by_status[409] == 1
    await client.cancel_run(first.id, thread_id=first.thread_id)


async def test_failed_run_reports_the_graph_error(client: LangGraphClient) -> None:
    run = await client.create_run(say("x", fail_message="boom from the graph"))
    done = await client.wait_for_run(run)
    assert done.status is RunStatus.FAILED and done.raw_status == "error"
    assert done.error and "boom from the graph" in done.error


async def test_create_batch_stateless(client: LangGraphClient) -> None:
    runs = await client.create_batch([say(f"b{i}") for i in range(3)])
    assert len(runs) == 3 and len({r.thread_id for r in runs}) == 3
    for i, run in enumerate(runs):
        done = await client.wait_for_run(run)
        assert done.status is RunStatus.COMPLETED
        assert (await client.get_result(done)).text == f"echo: b{i}"


async def test_stateless_create_and_wait(client: LangGraphClient) -> None:
    run = await client.create_stateless_run(say("nothread"))
    assert run.thread_id  # the server gives every run a thread, a temporary one here
    values = await client.wait(say("waited"), stateless=True)
    assert values["reply"] == "echo: waited"
    values = await client.wait(say("on a thread"))
    assert values["reply"] == "echo: on a thread"


async def test_stream_creates_and_streams(client: LangGraphClient) -> None:
    events = [e async for e in client.stream(say("streamed", steps=3), stream_mode="values")]
    names = [e.event for e in events]
    assert names[0] == "metadata" and "values" in names
    assert events[-1].data["reply"] == "echo: streamed"


# -- get / list --------------------------------------------------------------------------


async def test_get_list_filters_and_pagination(client: LangGraphClient) -> None:
    thread = await client.create_thread()
    tid = thread["thread_id"]
    made = []
    for i in range(5):
        run = await client.create_run(say(f"m{i}").model_copy(update={"thread_id": tid}))
        made.append(await client.wait_for_run(run))
    failed = await client.wait_for_run(
        await client.create_run(say("f", fail=True).model_copy(update={"thread_id": tid}))
    )
    got = await client.get_run(made[0].id, thread_id=tid)
    assert got.id == made[0].id and got.status is RunStatus.COMPLETED

    page = await client.list_runs(thread_id=tid, limit=2)
    assert len(page.items) == 2 and page.has_next_page()
    everything = await page.get_all()
    assert len(everything) == 6 and len({r.id for r in everything}) == 6
    pages = [p async for p in page.iter_pages()]
    assert [len(p.items) for p in pages] == [2, 2, 2, 0] or [len(p.items) for p in pages] == [
        2,
        2,
        2,
    ]
    second = await page.next_page()
    assert {r.id for r in second.items}.isdisjoint({r.id for r in page.items})
    via_iter = [r.id async for r in page]
    assert via_iter == [r.id for r in everything]

    # like the seeds' PagePromise: iterate the call itself, or read every page at once
    direct = [r.id async for r in client.list_runs(thread_id=tid, limit=2)]
    assert direct == [r.id for r in everything]
    assert [r.id for r in await client.list_runs(thread_id=tid, limit=4).get_all()] == direct

    offset = await client.list_runs(thread_id=tid, limit=10, offset=4)
    assert len(offset.items) == 2

    only_errors = await (await client.list_runs(thread_id=tid, status="error")).get_all()
    assert [r.id for r in only_errors] == [failed.id]
    only_ok = await (
        await client.list_runs(thread_id=tid, status=RunStatus.COMPLETED, limit=100)
    ).get_all()
    assert len(only_ok) == 5

    slim = await client.list_runs(thread_id=tid, select=["status"], limit=3)
    assert all(set(r.raw) <= {"run_id", "thread_id", "status"} for r in slim.items)
    assert all(r.status is not RunStatus.UNKNOWN for r in slim.items)


# -- join_stream ---------------------------------------------------------------------------


async def test_join_stream_resumes_after_a_drop_without_loss_or_repeat(langgraph_url: str) -> None:
    async with LangGraphClient(langgraph_url) as plain:
        request = say("resumable", sleep_seconds=1.5, steps=6).model_copy(
            update={"options": {"stream_resumable": True, "stream_mode": ["values", "updates"]}}
        )
        run = await plain.create_run(request)

        def rule(req: httpx.Request, n: int) -> str | None:
            return "drop-after:3" if req.url.path.endswith("/stream") and n == 1 else None

        flaky, transport = faulty_client(langgraph_url, rule)
        async with flaky:
            got = [(e.event, e.id, str(e.data)) async for e in flaky.join_stream(run)]
        stream_calls = [c for c in transport.calls if c[1].endswith("/stream")]
        assert len(stream_calls) == 2, "the stream was dropped once and resumed once"

        # the whole stream, replayed by the server from the start after the run ended
        full = [
            (e.event, e.id, str(e.data)) async for e in plain.join_stream(run, last_event_id="0-0")
        ]
        assert got == full[: len(got)] and len(got) == len(full)
        assert len(set(got)) == len(got)
        assert got[-1][0] == "values" and "echo: resumable" in got[-1][2]


async def test_join_stream_modes_and_cancel_on_disconnect(client: LangGraphClient) -> None:
    run = await client.create_run(
        say("modes", steps=2, sleep_seconds=0.4).model_copy(
            update={"options": {"stream_mode": ["values", "updates"], "stream_resumable": True}}
        )
    )
    events = [e async for e in client.join_stream(run, stream_mode="updates")]
    assert events and {e.event for e in events} <= {"updates", "metadata"}

    slow = await client.create_run(say("abandoned", sleep_seconds=30))
    stream = client.join_stream(slow, cancel_on_disconnect=True)
    async for _event in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    final = await client.wait_for_run(slow, timeout_seconds=20)
    assert final.status in (RunStatus.INTERRUPTED, RunStatus.CANCELLED)


async def test_join_stream_without_ids_refuses_a_lossy_resume(langgraph_url: str) -> None:
    async with LangGraphClient(langgraph_url) as plain:
        run = await plain.create_run(say("no ids", sleep_seconds=1.0, steps=4))

        def rule(req: httpx.Request, n: int) -> str | None:
            return "drop-after:0" if req.url.path.endswith("/stream") and n == 1 else None

        flaky, _ = faulty_client(langgraph_url, rule)
        async with flaky:
            with pytest.raises(TransportError, match="stream_resumable"):
                async for _event in flaky.join_stream(run):
                    pass
        await plain.wait_for_run(run)


# -- cancel / delete -------------------------------------------------------------------


async def test_cancel_interrupt_is_safe_to_repeat(client: LangGraphClient) -> None:
    run = await client.create_run(say("long", sleep_seconds=30))
    cancelled = await client.cancel_run(
        run.id, thread_id=run.thread_id, wait=True, action="interrupt"
    )
    assert cancelled.status is RunStatus.INTERRUPTED
    again = await client.cancel_run(run.id, thread_id=run.thread_id)
    assert again.status is RunStatus.INTERRUPTED
    done = await client.wait_for_run(await client.create_run(say("quick")))
    after_finish = await client.cancel_run(done.id, thread_id=done.thread_id)
    assert after_finish.status is RunStatus.COMPLETED


async def test_cancel_rollback_undoes_the_run_interrupt_keeps_it(client: LangGraphClient) -> None:
    kept = await client.create_run(say("interrupt me", sleep_seconds=30, steps=30))
    rolled = await client.create_run(say("rollback me", sleep_seconds=30, steps=30))
    for run in (kept, rolled):  # let both start and checkpoint their input
        async for _event in client.join_stream(run, stream_mode="values"):
            break
    await client.cancel_run(kept.id, thread_id=kept.thread_id, wait=True, action="interrupt")
    result = await client.cancel_run(
        rolled.id, thread_id=rolled.thread_id, wait=True, action="rollback"
    )
    # LangGraph Platform deletes a rolled-back run (reported as CANCELLED); the in-memory
    # dev server keeps its record as interrupted. Either way its checkpoints are gone.
    assert result.status in (RunStatus.CANCELLED, RunStatus.INTERRUPTED)
    kept_state = await client.get_thread_state(str(kept.thread_id))
    rolled_state = await client.get_thread_state(str(rolled.thread_id))
    assert [m["content"] for m in kept_state["values"]["messages"]] == ["interrupt me"]
    assert not rolled_state["values"].get("messages")
    with pytest.raises(Exception, match="interrupt' or 'rollback"):
        await client.cancel_run(kept.id, thread_id=kept.thread_id, action="explode")  # type: ignore[arg-type]


async def test_delete_run(client: LangGraphClient) -> None:
    done = await client.wait_for_run(await client.create_run(say("delete me")))
    await client.delete_run(done.id, thread_id=done.thread_id)
    with pytest.raises(NotFound):
        await client.get_run(done.id, thread_id=done.thread_id)


# -- timeouts and flaky networks -------------------------------------------------------


async def test_deadline_cancels_the_remote_run(langgraph_url: str) -> None:
    ticks = iter([0.0] + [1000.0] * 100)  # the deadline passes after the first look

    async with LangGraphClient(langgraph_url, clock=lambda: next(ticks)) as client:
        run = await client.create_run(say("forever", sleep_seconds=60))
        with pytest.raises(RunTimedOut) as info:
            await client.wait_for_run(run, timeout_seconds=30)
        assert info.value.cancelled and run.id in str(info.value)
        final = await client.get_run(run.id, thread_id=run.thread_id)
        assert final.status is RunStatus.INTERRUPTED


async def test_deadline_without_cancel_leaves_the_run(langgraph_url: str) -> None:
    ticks = iter([0.0] + [1000.0] * 100)
    async with LangGraphClient(langgraph_url, clock=lambda: next(ticks)) as client:
        run = await client.create_run(say("keep going", sleep_seconds=2))
        with pytest.raises(RunTimedOut) as info:
            await client.wait_for_run(run, timeout_seconds=30, cancel_on_timeout=False)
        assert not info.value.cancelled
    async with LangGraphClient(langgraph_url) as client:
        assert (await client.wait_for_run(run)).status is RunStatus.COMPLETED


async def test_wait_rides_out_a_flaky_proxy(langgraph_url: str) -> None:
    def rule(req: httpx.Request, n: int) -> str | None:
        if req.method == "GET" and "/runs/" in req.url.path and n <= 2:
            return "502-html"
        return None

    async def no_sleep(_seconds: float) -> None:
        return None

    client, _ = faulty_client(langgraph_url, rule)
    client.transport._sleep = no_sleep
    async with client:
        run = await client.create_run(say("through the storm", sleep_seconds=0.5))
        done = await client.wait_for_run(run)
    assert done.status is RunStatus.COMPLETED
    assert client.transport.stats.by_status.get(502, 0) >= 2


async def test_create_timeout_after_send_adopts_the_run(langgraph_url: str) -> None:
    def rule(req: httpx.Request, n: int) -> str | None:
        is_create = req.method == "POST" and req.url.path.endswith("/runs")
        return "timeout-after-send" if is_create and n == 1 else None

    client, transport = faulty_client(langgraph_url, rule)
    async with client:
        run = await client.create_run(say("exactly once"))
        creates = [c for c in transport.calls if c[0] == "POST" and c[1].endswith("/runs")]
        assert len(creates) == 1, "the create was not sent again"
        runs = await (await client.list_runs(thread_id=run.thread_id)).get_all()
        assert [r.id for r in runs] == [run.id]
        assert (await client.wait_for_run(run)).status is RunStatus.COMPLETED


# -- threads, resume, errors -----------------------------------------------------------


async def test_batch_items_find_their_runs_again(client: LangGraphClient) -> None:
    batch = f"b-{uuid.uuid4().hex[:8]}"
    request = say("item").with_metadata(batch_tags(batch, "k1"))
    before = client.transport.stats.requests
    assert await client.find_run(request) is None
    # the whole batch is looked up at once: other items of it cost no further request
    others = [say("x").with_metadata(batch_tags(batch, f"k{i}")) for i in range(2, 12)]
    assert [await client.find_run(r) for r in others] == [None] * 10
    assert client.transport.stats.requests - before == 1
    run = await client.create_run(request)
    assert run.thread_id == derived_thread_id(batch, "k1")
    again = await client.find_run(request)
    assert again is not None and again.id == run.id
    threads = await (
        await client.search_threads(metadata={"prefect_agent_runs_batch": batch})
    ).get_all()
    assert [t["thread_id"] for t in threads] == [run.thread_id]
    found = await client.find_batch_runs(batch)
    assert [r.id for r in found] == [run.id]
    await client.wait_for_run(run)
    # a new client (a rerun of the batch) finds the started item by the bulk search
    async with LangGraphClient(client.transport.base_url) as rerun:
        adopted = await rerun.find_run(request)
        assert adopted is not None and adopted.id == run.id
        assert await rerun.find_run(others[0]) is None
        assert rerun.transport.stats.requests == 2  # one search, one list of k1's runs


async def test_unknown_thread_and_run_name_the_ids(client: LangGraphClient) -> None:
    ghost_thread, ghost_run = str(uuid.uuid4()), str(uuid.uuid4())
    with pytest.raises(NotFound) as info:
        await client.list_runs(thread_id=ghost_thread)
    assert ghost_thread in str(info.value)
    thread = await client.create_thread()
    with pytest.raises(NotFound) as info:
        await client.get_run(ghost_run, thread_id=thread["thread_id"])
    assert ghost_run in str(info.value) and "langgraph" in str(info.value)


async def test_invalid_assistant_is_a_clear_error(client: LangGraphClient) -> None:
    with pytest.raises(BadRequest) as info:
        await client.create_run(RunRequest(assistant_id="no-such-graph", message="x"))
    message = str(info.value)
    assert "no-such-graph" in message and "echo" in message and info.value.status_code == 422


async def test_bad_input_is_refused_before_any_request(client: LangGraphClient) -> None:
    before = client.transport.stats.requests
    with pytest.raises(Exception, match="thread_id"):
        await client.get_run("r", thread_id="a/b")
    with pytest.raises(Exception, match="unknown run option"):
        await client.create_run(say("x").model_copy(update={"options": {"bogus": 1}}))
    assert client.transport.stats.requests == before


async def test_join_stream_of_an_unknown_run_is_not_found(client: LangGraphClient) -> None:
    done = await client.wait_for_run(await client.create_run(say("gone")))
    await client.delete_run(done.id, thread_id=done.thread_id)
    with pytest.raises(NotFound, match=done.id):
        async for _event in client.join_stream(done):
            pass
