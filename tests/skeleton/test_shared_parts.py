"""The shared parts every backend is built on: paths, transient, backoff, pagers, SSE, steps."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from prefect_agent_runs.backends import registry
from prefect_agent_runs.backends.paging import Chunk, CursorPager, OffsetPager
from prefect_agent_runs.backends.paths import path_segment
from prefect_agent_runs.backends.sse import RunEvent, read_events
from prefect_agent_runs.backends.steps import event_stream_step, join_step
from prefect_agent_runs.errors import (
    ApiError,
    BadRequest,
    NotSupported,
    RateLimited,
    ServerError,
    TransportError,
    ValidationError,
)
from prefect_agent_runs.http import Transport
from prefect_agent_runs.models import STATUS_MAPS, Run, RunStatus
from prefect_agent_runs.testing._serve import ServedApp
from prefect_agent_runs.transient import Backoff, is_transient, may_have_started

# -- path segments ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a?b", "a#b", "a\\b", " a", "a\n"])
def test_path_segment_refuses_before_any_request(bad: str) -> None:
    with pytest.raises(ValidationError, match=r"^demo: thread_id"):
        path_segment(bad, backend="demo", field="thread_id")


def test_path_segment_percent_encodes() -> None:
    assert path_segment("a b%c", backend="demo", field="run_id") == "a%20b%25c"
    assert path_segment("run_1", backend="demo", field="run_id") == "run_1"
    with pytest.raises(ValidationError, match="must be a string"):
        path_segment(7, backend="demo", field="run_id")


# -- transient, and the one backoff -------------------------------------------------------


def test_one_definition_of_transient() -> None:
    assert is_transient(TransportError("x", reached_server=False))
    for status in (408, 429, 500, 502, 503, 504, 520):
        assert is_transient(ApiError("x", status_code=status)), status
    for status in (400, 401, 404, 409, 501, 505):
        assert not is_transient(ApiError("x", status_code=status)), status
    assert not is_transient(ValueError("x"))


def test_a_create_is_ambiguous_only_if_it_may_have_started() -> None:
    assert may_have_started(TransportError("read timeout", reached_server=None))
    assert may_have_started(ServerError("502", status_code=502))
    assert not may_have_started(TransportError("connect", reached_server=False))
    assert not may_have_started(RateLimited("429", status_code=429))
    assert not may_have_started(BadRequest("400", status_code=400))


def test_backoff_grows_caps_and_jitters_down_only() -> None:
    exact = Backoff(1.0, 6.0, multiplier=2.0, jitter=0.0)
    assert [exact.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 6.0, 6.0]
    full = Backoff(1.0, 6.0, rng=random.Random(3))
    delays = [full.delay(n) for n in range(50)]
    assert all(0.0 <= d <= 6.0 for d in delays) and len(set(delays)) > 10


# -- pagers -------------------------------------------------------------------------------


async def test_offset_pager_follows_full_pages() -> None:
    items = list(range(23))
    calls: list[tuple[int, int]] = []

    async def fetch(offset: int, limit: int) -> list[int]:
        calls.append((offset, limit))
        return items[offset : offset + limit]

    page = await OffsetPager(fetch, limit=10).first()
    assert await page.get_all() == items
    assert calls == [(0, 10), (10, 10), (20, 10)]


async def test_cursor_pager_stops_on_a_cursor_that_does_not_advance() -> None:
    async def fetch(cursor: str | None) -> Chunk[str]:
        start = int(cursor or 0)
        if start >= 4:  # a broken server: sends the same page again and again
            return Chunk(["c", "d"], next_cursor="4")
        return Chunk(["ab"[start // 2] + str(start), "x" + str(start)], next_cursor=str(start + 2))

    page = await CursorPager(fetch, item_id=lambda x: x, description="test").first()
    assert await page.get_all() == ["a0", "x0", "b2", "x2", "c", "d"]


# -- the resumable SSE reader -------------------------------------------------------------

EVENTS = [(str(i), f"e{i}") for i in range(1, 7)]


class SseServer(ServedApp):
    """Streams EVENTS after Last-Event-ID; the first connection drops after 3 events."""

    def __init__(self) -> None:
        super().__init__()
        self.connections: list[str | None] = []
        self.app = Starlette(routes=[Route("/events", self.events)])

    async def events(self, request: Request) -> Response:
        after = request.headers.get("last-event-id")
        self.connections.append(after)
        start = 0 if after is None else int(after)
        first = len(self.connections) == 1

        async def body() -> AsyncGenerator[bytes, None]:
            for n, (event_id, data) in enumerate(EVENTS[start:]):
                if first and n == 3:
                    raise RuntimeError("connection dropped")
                yield f"id: {event_id}\nevent: tick\ndata: {data}\n\n".encode()

        return StreamingResponse(body(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def sse_server() -> Iterator[SseServer]:
    with SseServer() as server:
        yield server


async def test_sse_reader_resumes_after_a_drop_without_loss_or_repeat(
    sse_server: SseServer,
) -> None:
    async with Transport(backend="demo", base_url=sse_server.url) as transport:
        events = [
            e.data
            async for e in read_events(
                transport, "GET", "/events", action="stream", max_reconnects=2
            )
        ]
    assert events == [data for _, data in EVENTS]
    assert sse_server.connections == [None, "3"]


# -- wait steps ---------------------------------------------------------------------------


def _run(status: RunStatus) -> Run:
    return Run(id="r1", thread_id="t1", status=status, raw_status=status.value, backend="demo")


async def test_join_step_reads_after_a_cut_join_and_can_skip_the_read() -> None:
    reads: list[int] = []

    async def join(seconds: float) -> Any:
        assert seconds == 2.0
        raise TransportError("read timeout", reached_server=None)

    async def read() -> Run:
        reads.append(1)
        return _run(RunStatus.RUNNING)

    observation = await join_step(join, read, chunk_seconds=10)(2.0)
    assert observation.run.status is RunStatus.RUNNING and observation.poll_after_seconds == 0.0

    async def answered(values: Any) -> Run | None:
        return _run(RunStatus.COMPLETED)

    async def quick_join(seconds: float) -> Any:
        return {"values": 1}

    observation = await join_step(quick_join, read, chunk_seconds=10, answered=answered)(None)
    assert observation.run.status is RunStatus.COMPLETED and reads == [1]


async def test_event_stream_step_stops_at_the_final_event() -> None:
    seen: list[str] = []

    async def events() -> AsyncGenerator[RunEvent, None]:
        for name in ("started", "progress", "finished", "never"):
            seen.append(name)
            yield RunEvent(event=name, data=None, id=None)

    async def read() -> Run:
        return _run(RunStatus.COMPLETED)

    step = event_stream_step(events, read, is_final=lambda e: e.event == "finished")
    assert (await step(5.0)).run.status is RunStatus.COMPLETED
    assert seen == ["started", "progress", "finished"]


# -- the registry -------------------------------------------------------------------------


def test_registry_knows_the_built_in_backends_and_their_status_maps() -> None:
    assert {"langgraph", "openai_assistants"} <= set(registry.names())
    spec = registry.get("langgraph")
    assert spec.status_map["success"] is RunStatus.COMPLETED
    assert STATUS_MAPS["langgraph"] == dict(spec.status_map)
    assert spec.has("join") and not registry.get("openai_assistants").has("join")
    with pytest.raises(NotSupported, match="no_such: no such backend"):
        registry.get("no_such")


def test_registry_refuses_a_second_backend_under_a_name() -> None:
    spec = registry.get("langgraph")
    with pytest.raises(ValueError, match="registered already"):
        registry.register(
            registry.BackendSpec(
                name="langgraph",
                client=spec.client,
                credentials_block="Other",
                block_type_name="Other",
            )
        )


def test_transport_uses_the_client_error_parser() -> None:
    def parser(body: Any) -> tuple[str | None, str | None, dict[str, list[str]]]:
        return f"custom {body['oops']}", "c1", {}

    transport = Transport(backend="demo", base_url="http://x", error_parser=parser)
    response = httpx.Response(400, json={"oops": "bad"}, request=httpx.Request("GET", "http://x"))
    error = transport._raise_api_error(response, "do it")
    assert isinstance(error, BadRequest) and "custom bad" in str(error) and error.code == "c1"


def test_a_client_class_error_parser_reaches_its_transport() -> None:
    from prefect_agent_runs.backends.base import BaseRunsClient

    def parser(body: Any) -> tuple[str | None, str | None, dict[str, list[str]]]:
        return "parsed by the backend", None, {}

    class Parsing(BaseRunsClient):
        backend = "parsing"
        error_parser = parser

    client = Parsing(Transport(backend="parsing", base_url="http://x"))
    assert client.transport.error_parser is parser
    assert BaseRunsClient(Transport(backend="b", base_url="http://x")).transport.error_parser


@pytest.mark.parametrize("bad", [".", "..", "a/b"])
async def test_the_backends_refuse_dot_ids_before_any_request(bad: str) -> None:
    from prefect_agent_runs.backends import AssistantsClient, LangGraphClient

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    for cls, base in ((LangGraphClient, "http://lg"), (AssistantsClient, "http://oa/v1")):
        http = httpx.AsyncClient(base_url=base, transport=httpx.MockTransport(handler))
        client = cls(base, http_client=http)
        with pytest.raises(ValidationError, match="is not a valid id"):
            await client.get_run(bad, thread_id="t1")
        with pytest.raises(ValidationError, match="is not a valid id"):
            await client.cancel_run("r1", thread_id=bad)
        await http.aclose()
    assert sent == []
