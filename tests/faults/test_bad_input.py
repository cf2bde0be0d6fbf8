"""Bad input and bad answers (issue 13): each case, its exact error class, a message that
names the backend and the offending id or field, and nothing sent when it can be refused
locally. Requests are counted by an ``httpx.MockTransport`` (no server needed)."""

from __future__ import annotations

import datetime
import email.utils
import logging
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _harness import new_batch_key

from prefect_agent_runs import AssistantsCredentials, RunRequest
from prefect_agent_runs.backends.langgraph import LangGraphClient
from prefect_agent_runs.backends.openai_assistants import AssistantsClient
from prefect_agent_runs.errors import (
    AgentRunsError,
    Forbidden,
    NotFound,
    RateLimited,
    RunTimedOut,
    ServerError,
    TransportError,
    Unauthorized,
    ValidationError,
)
from prefect_agent_runs.flows import run_batch
from prefect_agent_runs.http import BODY_TOO_LARGE, MAX_BODY_BYTES
from prefect_agent_runs.testing import AssistantsEmulator
from prefect_agent_runs.testing.assistants import FakeClock

BASE = "http://api.test"
Handler = Callable[[httpx.Request], httpx.Response]

LG_RUN = {"run_id": "r1", "thread_id": "t1", "status": "success", "metadata": {}}
OA_RUN = {"id": "run_1", "object": "thread.run", "thread_id": "thread_1", "status": "completed"}


class Recorder:
    """A scripted server: answers from ``handler`` and counts what was sent."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler or (lambda r: httpx.Response(500, text="should not be called"))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self), base_url=BASE)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client_for(backend: str, recorder: Recorder, **kwargs: Any) -> Any:
    kwargs.setdefault("sleep", Sleeps())
    if backend == "langgraph":
        return LangGraphClient(BASE, api_key="lg-key-1234", http_client=recorder.http(), **kwargs)
    return AssistantsClient(
        BASE + "/v1", api_key="sk-key-1234", http_client=recorder.http(), **kwargs
    )


BACKENDS = ["langgraph", "openai_assistants"]
RUN_BODY = {"langgraph": LG_RUN, "openai_assistants": OA_RUN}


def assert_names(exc: BaseException, *parts: str) -> None:
    text = str(exc)
    for part in parts:
        assert part in text, f"{part!r} not in {text!r}"


# -- ids ------------------------------------------------------------------------------

REFUSED_IDS = ["a/b", ".", "..", "a?b", "a#b", " a", "a ", "a\tb", "a\\b", ""]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", REFUSED_IDS, ids=repr)
@pytest.mark.parametrize("where", ["run_id", "thread_id", "cancel", "create"])
async def test_bad_ids_are_refused_before_any_request(backend: str, bad: str, where: str) -> None:
    recorder = Recorder()
    client = client_for(backend, recorder)
    with pytest.raises(ValidationError) as info:
        if where == "run_id":
            await client.get_run(bad, thread_id="t1")
        elif where == "thread_id":
            await client.get_run("r1", thread_id=bad)
        elif where == "cancel":
            await client.cancel_run(bad, thread_id="t1")
        else:
            await client.create_run(RunRequest(assistant_id="a", thread_id=bad, message="hi"))
    assert recorder.requests == []
    field = "run_id" if where in ("run_id", "cancel") else "thread_id"
    assert_names(info.value, backend, field)
    if bad:
        assert repr(bad) in str(info.value) or bad in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("odd", ["a%b", "%2e%2e", "a b", "ü"])
async def test_other_ids_are_percent_encoded(backend: str, odd: str) -> None:
    """``%``, inner spaces and non-ASCII are legal in an id: sent, percent-encoded."""
    recorder = Recorder(lambda r: httpx.Response(200, json=RUN_BODY[backend]))
    client = client_for(backend, recorder)
    await client.get_run(odd, thread_id="t1")
    (request,) = recorder.requests
    from urllib.parse import quote

    assert request.url.raw_path.decode().endswith("/runs/" + quote(odd, safe=""))


# -- requests -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_neither_message_nor_input_is_refused(backend: str) -> None:
    recorder = Recorder()
    with pytest.raises(ValidationError) as info:
        await client_for(backend, recorder).create_run(RunRequest(assistant_id="a", key="k-empty"))
    assert recorder.requests == []
    assert_names(info.value, backend, "'k-empty'", "neither message nor input")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_metadata_that_is_not_json_is_refused(backend: str) -> None:
    recorder = Recorder()
    request = RunRequest(
        assistant_id="a", message="hi", metadata={"when": datetime.datetime(2026, 1, 1)}
    )
    with pytest.raises(ValidationError) as info:
        await client_for(backend, recorder).create_run(request)
    assert recorder.requests == []
    assert_names(info.value, backend, "'when'", "datetime")


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({f"k{i}": "v" for i in range(17)}, "at most 16"),
        ({"k" * 65: "v"}, "k" * 65),
        ({"long": "v" * 513}, "'long'"),
        ({"n": 3}, "'n'"),
    ],
    ids=["17-keys", "key-65-chars", "value-513-chars", "non-string"],
)
async def test_openai_metadata_limits(metadata: dict[str, Any], named: str) -> None:
    recorder = Recorder()
    with pytest.raises(ValidationError) as info:
        await client_for("openai_assistants", recorder).create_run(
            RunRequest(assistant_id="a", message="hi", metadata=metadata)
        )
    assert recorder.requests == []
    assert_names(info.value, "openai_assistants", named)


async def test_an_over_long_message_is_refused_on_assistants() -> None:
    recorder = Recorder()
    with pytest.raises(ValidationError) as info:
        await client_for("openai_assistants", recorder).create_run(
            RunRequest(assistant_id="a", message="x" * 256_001, key="k-long")
        )
    assert recorder.requests == []
    assert_names(info.value, "openai_assistants", "'k-long'", "256,001", "256,000")


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:8123", "api.example.com/v1", "ftp://api.example.com", "http://", "not a url", ""],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_invalid_base_urls_are_refused(backend: str, url: str) -> None:
    cls: Any = LangGraphClient if backend == "langgraph" else AssistantsClient
    with pytest.raises(ValidationError) as info:
        cls(url)
    assert_names(info.value, backend, "base_url", repr(url))


def test_tls_verification_is_on_by_default_and_off_only_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="prefect_agent_runs")
    on = LangGraphClient("https://lg.example.com")
    assert not caplog.records
    off = AssistantsClient("https://oa.example.com/v1", verify_tls=False)
    (record,) = caplog.records
    assert "TLS certificate verification is OFF" in record.getMessage()
    assert "openai_assistants" in record.getMessage()
    for client, mode in ((on, "CERT_REQUIRED"), (off, "CERT_NONE")):
        shards = client.transport.client._transport._shards  # type: ignore[attr-defined]
        assert shards  # every pool of the sharded transport verifies (or not) alike
        for shard in shards:
            assert shard.transport._pool._ssl_context.verify_mode.name == mode


# -- answers --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("status", "cls"), [(401, Unauthorized), (403, Forbidden)])
async def test_401_and_403_are_never_retried(backend: str, status: int, cls: type) -> None:
    recorder = Recorder(lambda r: httpx.Response(status, json={"error": {"message": "nope"}}))
    client = client_for(backend, recorder)
    with pytest.raises(cls) as info:
        await client.get_run("r-auth", thread_id="t1")
    assert len(recorder.requests) == 1
    assert_names(info.value, backend, "r-auth", f"HTTP {status}")
    recorder.requests.clear()
    with pytest.raises(cls):
        await client.create_run(RunRequest(assistant_id="a", message="hi", thread_id="t1"))
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_404_on_a_thread_names_the_thread(backend: str) -> None:
    recorder = Recorder(lambda r: httpx.Response(404, json={"detail": "Thread not found"}))
    with pytest.raises(NotFound) as info:
        await client_for(backend, recorder).get_run("r1", thread_id="t-missing")
    assert len(recorder.requests) == 1
    assert_names(info.value, backend, "t-missing", "HTTP 404")


def _truncated(body: dict[str, Any]) -> httpx.Response:
    import json

    raw = json.dumps(body).encode()
    return httpx.Response(
        200, content=raw[: len(raw) // 2], headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "bad",
    ["html", "truncated", "empty-json-start"],
)
async def test_a_broken_200_on_a_read_is_retried_then_reported(backend: str, bad: str) -> None:
    """D1: the decode is inside the retry loop. Broken twice, then right: the read succeeds."""

    def broken(request: httpx.Request) -> httpx.Response:
        if bad == "html":
            return httpx.Response(200, text="<html>502 Bad Gateway</html>")
        if bad == "truncated":
            return _truncated(RUN_BODY[backend])
        return httpx.Response(200, text="{")

    answers = [broken, broken, lambda r: httpx.Response(200, json=RUN_BODY[backend])]
    recorder = Recorder(lambda r: answers.pop(0)(r))
    run = await client_for(backend, recorder).get_run("r1", thread_id="t1")
    assert run.id == RUN_BODY[backend].get("run_id", RUN_BODY[backend].get("id"))
    assert len(recorder.requests) == 3

    always = Recorder(broken)
    with pytest.raises(ServerError) as info:
        await client_for(backend, always, max_retries=2).get_run("r-bad", thread_id="t1")
    assert len(always.requests) == 3
    assert_names(info.value, backend, "r-bad", "not JSON")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_list_instead_of_an_object_is_a_server_error(backend: str) -> None:
    recorder = Recorder(lambda r: httpx.Response(200, json=[RUN_BODY[backend]]))
    with pytest.raises(ServerError) as info:
        await client_for(backend, recorder).get_run("r1", thread_id="t1")
    assert_names(info.value, backend, "is not a run object")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_50_mb_answer_is_not_read_whole(backend: str, declared: bool) -> None:
    chunk = b"x" * (1024 * 1024)

    class Stream(httpx.AsyncByteStream):
        sent = 0

        async def __aiter__(self) -> Any:
            for _ in range(50):
                Stream.sent += 1
                yield chunk

    def huge(request: httpx.Request) -> httpx.Response:
        headers = {"content-length": str(50 * len(chunk))} if declared else {}
        return httpx.Response(200, stream=Stream(), headers=headers)

    recorder = Recorder(huge)
    tracemalloc.start()
    try:
        with pytest.raises(ServerError) as info:
            await client_for(backend, recorder, max_retries=0).get_run("r-huge", thread_id="t1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == BODY_TOO_LARGE
    assert_names(info.value, backend, "r-huge", "max_body_bytes")
    assert Stream.sent <= MAX_BODY_BYTES // len(chunk) + 1
    assert peak < MAX_BODY_BYTES * 2.5  # never the whole 50 MB (plus decode copies)


SSE_NO_TERMINATORS = (
    'event: thread.run.created\ndata: {"id": "run_1", "object": "thread.run"}\n'
    'event: thread.run.completed\ndata: {"id": "run_1", "object": "thread.run"}\n'
)


async def test_malformed_sse_raises_on_assistants() -> None:
    recorder = Recorder(
        lambda r: httpx.Response(
            200, text=SSE_NO_TERMINATORS, headers={"content-type": "text/event-stream"}
        )
    )
    client = client_for("openai_assistants", recorder)
    with pytest.raises(TransportError) as info:
        async for _ in client.stream_run(
            RunRequest(assistant_id="a", message="hi", thread_id="thread_1")
        ):
            pass
    assert_names(info.value, "openai_assistants", "thread_1", "ended in the middle of an event")


async def test_malformed_sse_raises_on_langgraph() -> None:
    from prefect_agent_runs.models import Run, RunStatus

    body = "event: values\ndata: {}\nid: 1-0\nevent: end\ndata: null\n"
    recorder = Recorder(
        lambda r: httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    )
    client = client_for("langgraph", recorder)
    run = Run(id="r-sse", thread_id="t1", status=RunStatus.RUNNING, backend="langgraph")
    with pytest.raises(TransportError) as info:
        async for _ in client.join_stream(run, max_reconnects=0):
            pass
    assert_names(info.value, "langgraph", "r-sse", "ended in the middle of an event")


# -- Retry-After ------------------------------------------------------------------------


def _http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


@pytest.mark.parametrize(
    ("header", "check"),
    [
        ("-5", lambda s: 0 <= s <= 0.5),  # garbage: our own backoff (first one <= 0.5 s)
        ("1000000000", lambda s: s == 60.0),  # clamped to max_retry_after_seconds
        ("date+5", lambda s: 3.0 < s <= 5.0),  # an HTTP date 5 s ahead
        ("date-50", lambda s: s == 0.0),  # a date in the past: go now
        ("soon", lambda s: 0 <= s <= 0.5),  # unparsable: backoff
    ],
    ids=["negative", "huge", "date", "past-date", "garbage"],
)
async def test_retry_after_is_honored_within_bounds(
    header: str, check: Callable[[float], bool], caplog: pytest.LogCaptureFixture
) -> None:
    value = _http_date(float(header[4:])) if header.startswith("date") else header
    answers = [
        httpx.Response(429, headers={"retry-after": value}, json={"error": {"message": "slow"}}),
        httpx.Response(200, json=OA_RUN),
    ]
    recorder = Recorder(lambda r: answers.pop(0))
    sleeps = Sleeps()
    await client_for("openai_assistants", recorder, sleep=sleeps).get_run("run_1", thread_id="t1")
    (slept,) = sleeps.calls
    assert check(slept), slept
    if header == "1000000000":
        assert any("max_retry_after_seconds" in r.getMessage() for r in caplog.records)


async def test_429_forever_is_rate_limited_after_the_retries() -> None:
    recorder = Recorder(
        lambda r: httpx.Response(
            429, headers={"retry-after": "1"}, json={"error": {"message": "q"}}
        )
    )
    with pytest.raises(RateLimited) as info:
        await client_for("openai_assistants", recorder, max_retries=4).get_run(
            "run_q", thread_id="t1"
        )
    assert len(recorder.requests) == 5
    assert info.value.retry_after == 1.0
    assert_names(info.value, "openai_assistants", "run_q", "HTTP 429")


# -- a run that never finishes ------------------------------------------------------------


@pytest.fixture
def never_emulator() -> Iterator[tuple[AssistantsEmulator, FakeClock]]:
    clock = FakeClock()
    with AssistantsEmulator(outcome="never", clock=clock, poll_after_ms=None) as emu:
        yield emu, clock


async def test_a_run_that_never_finishes_times_out_and_is_cancelled(
    never_emulator: tuple[AssistantsEmulator, FakeClock],
) -> None:
    emu, clock = never_emulator

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    async with AssistantsClient(emu.base_url, api_key="sk-x", clock=clock, sleep=sleep) as client:
        run = await client.create_run(RunRequest(assistant_id="asst_echo", message="hi"))
        with pytest.raises(RunTimedOut) as info:
            await client.wait_for_run(run, timeout_seconds=600)
    assert info.value.cancelled is True
    assert_names(info.value, "openai_assistants", run.id, "timeout_seconds=600", "cancelled")
    (remote,) = [r for r in emu.runs() if r["id"] == run.id]
    assert remote["status"] in ("cancelled", "cancelling")


# -- run_batch's own arguments ----------------------------------------------------------------


def _items(n: int) -> list[dict[str, Any]]:
    return [{"key": f"item-{i}", "assistant_id": "asst_echo", "message": f"q{i}"} for i in range(n)]


@pytest.mark.parametrize(
    ("bound", "value"),
    [("timeout_seconds", -5), ("max_concurrency", 0), ("max_active_runs", 0)],
)
@pytest.mark.usefixtures("prefect_harness")
async def test_run_batch_bounds_out_of_range_are_refused_before_anything_is_sent(
    bound: str, value: int
) -> None:
    with AssistantsEmulator() as emu:
        credentials = AssistantsCredentials(base_url=emu.base_url, api_key="sk-test-key")
        with pytest.raises(ValidationError, match=f"{bound} must be"):
            await run_batch(
                credentials, _items(10), batch_key=new_batch_key("bad"), **{bound: value}
            )
        assert emu.requests == []


@pytest.mark.usefixtures("prefect_harness")
async def test_run_batch_duplicate_keys_are_refused_before_anything_is_sent() -> None:
    twice = [*_items(10), {"key": "item-4", "assistant_id": "asst_echo", "message": "again"}]
    with AssistantsEmulator() as emu:
        credentials = AssistantsCredentials(base_url=emu.base_url, api_key="sk-test-key")
        with pytest.raises(ValidationError, match="items 4 and 10 have the same key 'item-4'"):
            await run_batch(credentials, twice, batch_key=new_batch_key("dup"))
        assert emu.requests == []


def test_error_classes_are_agent_runs_errors() -> None:
    for cls in (ValidationError, ServerError, TransportError, RunTimedOut, RateLimited):
        assert issubclass(cls, AgentRunsError)
