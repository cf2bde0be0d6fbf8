"""The transport: retries per DESIGN.md's rules, error mapping, redaction (respx, no sleeps)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest
import respx

from prefect_agent_runs._version import __version__
from prefect_agent_runs.errors import (
    AgentRunsError,
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    NotSupported,
    RateLimited,
    RunCancelled,
    RunExpired,
    RunFailed,
    RunRequiresAction,
    RunTimedOut,
    ServerError,
    TransportError,
    Unauthorized,
    ValidationError,
)
from prefect_agent_runs.http import (
    USER_AGENT,
    RetryMode,
    RetryPolicy,
    Transport,
    error_from_response,
    parse_retry_after,
    redact,
)
from prefect_agent_runs.models import Run, RunStatus

BASE = "https://api.example.test"
BACKEND = "testbackend"
KEY = "sk-test-SECRET0123456789abcdef"


class Sleeps:
    """A fake sleep that records what it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def make_transport(sleeps: Sleeps, **kwargs: object) -> Transport:
    options: dict[str, object] = {
        "backend": BACKEND,
        "base_url": BASE,
        "headers": {"Authorization": f"Bearer {KEY}"},
        "secrets": [KEY],
        "sleep": sleeps,
    }
    options.update(kwargs)
    return Transport(**options)  # type: ignore[arg-type]


def response(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", f"{BASE}/x"), **kwargs)  # type: ignore[arg-type]


# -- Retry-After -------------------------------------------------------------------------


async def test_retry_after_seconds_is_honored(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.get("/runs/r1").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "slow down"}),
            httpx.Response(200, json={"id": "r1"}),
        ]
    )
    async with make_transport(sleeps) as transport:
        body = await transport.request_json("GET", "/runs/r1", action="get run r1")
    assert body == {"id": "r1"}
    assert route.call_count == 2
    assert sleeps.calls == [7.0]
    assert transport.stats.requests == 2
    assert transport.stats.retries == 1
    assert transport.stats.by_status == {429: 1, 200: 1}


async def test_retry_after_ms_wins_over_retry_after(
    router: respx.MockRouter, sleeps: Sleeps
) -> None:
    router.get("/runs/r1").mock(
        side_effect=[
            httpx.Response(429, headers={"retry-after-ms": "1500", "Retry-After": "9"}),
            httpx.Response(200, json={}),
        ]
    )
    async with make_transport(sleeps) as transport:
        await transport.request("GET", "/runs/r1", action="get run r1")
    assert sleeps.calls == [1.5]


async def test_retry_after_is_clamped(
    router: respx.MockRouter, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    router.get("/runs/r1").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "3600"}),
            httpx.Response(200, json={}),
        ]
    )
    policy = RetryPolicy(max_retries=2, max_retry_after_seconds=12.0)
    caplog.set_level(logging.WARNING, logger="prefect_agent_runs.http")
    async with make_transport(sleeps, retry_policy=policy) as transport:
        await transport.request("GET", "/runs/r1", action="get run r1")
    assert sleeps.calls == [12.0]
    assert any("max_retry_after_seconds" in r.getMessage() for r in caplog.records)


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    headers = httpx.Headers({"Retry-After": format_datetime(later, usegmt=True)})
    assert parse_retry_after(headers, now=lambda: now.timestamp()) == pytest.approx(30.0)
    # a date in the past is "now", never negative
    assert parse_retry_after(headers, now=lambda: later.timestamp() + 100) == 0.0
    assert parse_retry_after(httpx.Headers({})) is None
    # a negative delay is garbage: None, so the caller backs off (issue 13)
    assert parse_retry_after(httpx.Headers({"Retry-After": "-5"})) is None
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25


def test_parse_retry_after_garbage_is_none() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None


async def test_unparseable_retry_after_still_maps_to_rate_limited(
    router: respx.MockRouter, sleeps: Sleeps
) -> None:
    router.get("/runs/r1").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "soon"}, json={"message": "x"})
    )
    async with make_transport(sleeps, max_retries=0) as transport:
        with pytest.raises(RateLimited) as info:
            await transport.request("GET", "/runs/r1", action="get run r1")
    assert info.value.retry_after is None


# -- idempotent retries ------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_get_retries_5xx_then_succeeds(
    router: respx.MockRouter, sleeps: Sleeps, status: int
) -> None:
    route = router.get("/runs/r1").mock(
        side_effect=[
            httpx.Response(status, json={"error": {"message": "boom"}}),
            httpx.Response(status, text="oops"),
            httpx.Response(200, json={"id": "r1"}),
        ]
    )
    async with make_transport(sleeps) as transport:
        assert await transport.request_json("GET", "/runs/r1", action="get run r1") == {"id": "r1"}
    assert route.call_count == 3
    assert transport.stats.requests == 3
    assert transport.stats.retries == 2
    assert len(sleeps.calls) == 2
    # full jitter: each backoff within [0, max_backoff_seconds]
    assert all(0.0 <= s <= RetryPolicy().max_backoff_seconds for s in sleeps.calls)


async def test_get_retries_connect_error_then_succeeds(
    router: respx.MockRouter, sleeps: Sleeps
) -> None:
    route = router.get("/runs/r1").mock(
        side_effect=[httpx.ConnectError, httpx.ReadTimeout, httpx.Response(200, json={})]
    )
    async with make_transport(sleeps) as transport:
        await transport.request("GET", "/runs/r1", action="get run r1")
    assert route.call_count == 3
    assert transport.stats.retries == 2
    assert transport.stats.by_status[0] == 2


async def test_exhausted_retries_raise_server_error(
    router: respx.MockRouter, sleeps: Sleeps
) -> None:
    route = router.get("/runs/r1").mock(
        return_value=httpx.Response(
            503, json={"error": {"message": "overloaded"}}, headers={"x-request-id": "req-9"}
        )
    )
    async with make_transport(sleeps, max_retries=3) as transport:
        with pytest.raises(ServerError) as info:
            await transport.request("GET", "/runs/r1", action="get run r1 on thread t1")
    assert route.call_count == 4
    assert transport.stats.requests == 4
    assert transport.stats.retries == 3
    message = str(info.value)
    assert BACKEND in message
    assert "get run r1 on thread t1" in message
    assert "overloaded" in message
    assert "503" in message
    assert "req-9" in message
    assert info.value.status_code == 503
    assert info.value.request_id == "req-9"
    assert info.value.backend == BACKEND


async def test_exhausted_retries_raise_transport_error(
    router: respx.MockRouter, sleeps: Sleeps
) -> None:
    route = router.get("/runs/r1").mock(side_effect=httpx.ConnectError("connection refused"))
    async with make_transport(sleeps, max_retries=2) as transport:
        with pytest.raises(TransportError) as info:
            await transport.request("GET", "/runs/r1", action="get run r1")
    assert route.call_count == 3
    assert info.value.reached_server is False
    assert BACKEND in str(info.value)
    assert "get run r1" in str(info.value)
    assert "ConnectError" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_get_does_not_retry_4xx(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.get("/runs/r1").mock(return_value=httpx.Response(404, json={"detail": "nope"}))
    async with make_transport(sleeps) as transport:
        with pytest.raises(NotFound):
            await transport.request("GET", "/runs/r1", action="get run r1")
    assert route.call_count == 1
    assert sleeps.calls == []


async def test_never_mode_sends_once(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.post("/x").mock(return_value=httpx.Response(503))
    async with make_transport(sleeps) as transport:
        with pytest.raises(ServerError):
            await transport.request("POST", "/x", action="x", mode=RetryMode.NEVER)
    assert route.call_count == 1


async def test_x_should_retry_false_stops_retries(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.get("/runs/r1").mock(
        return_value=httpx.Response(503, headers={"x-should-retry": "false"})
    )
    async with make_transport(sleeps) as transport:
        with pytest.raises(ServerError):
            await transport.request("GET", "/runs/r1", action="get run r1")
    assert route.call_count == 1
    assert sleeps.calls == []


async def test_x_should_retry_true_retries_a_4xx(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.get("/runs/r1").mock(
        side_effect=[
            httpx.Response(400, headers={"x-should-retry": "true"}),
            httpx.Response(200, json={}),
        ]
    )
    async with make_transport(sleeps) as transport:
        await transport.request("GET", "/runs/r1", action="get run r1")
    assert route.call_count == 2


# -- create mode ------------------------------------------------------------------------


async def test_create_read_timeout_is_not_resent(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.post("/runs").mock(
        side_effect=[httpx.ReadTimeout("timed out"), httpx.Response(200, json={"id": "r1"})]
    )
    async with make_transport(sleeps) as transport:
        with pytest.raises(TransportError) as info:
            await transport.request("POST", "/runs", action="create run", mode=RetryMode.CREATE)
    assert route.call_count == 1
    assert info.value.reached_server is None
    assert "may have received" in str(info.value)
    assert sleeps.calls == []


async def test_create_connect_error_is_resent(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.post("/runs").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json={"id": "r1"})]
    )
    async with make_transport(sleeps) as transport:
        body = await transport.request_json(
            "POST", "/runs", action="create run", mode=RetryMode.CREATE, json={"a": 1}
        )
    assert body == {"id": "r1"}
    assert route.call_count == 2
    assert transport.stats.retries == 1


async def test_create_500_is_not_resent(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.post("/runs").mock(
        side_effect=[httpx.Response(500, json={"message": "db"}), httpx.Response(200, json={})]
    )
    async with make_transport(sleeps) as transport:
        with pytest.raises(ServerError):
            await transport.request("POST", "/runs", action="create run", mode=RetryMode.CREATE)
    assert route.call_count == 1


async def test_create_429_is_resent(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.post("/runs").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(200, json={"id": "r1"}),
        ]
    )
    async with make_transport(sleeps) as transport:
        await transport.request("POST", "/runs", action="create run", mode=RetryMode.CREATE)
    assert route.call_count == 2
    assert sleeps.calls == [2.0]


# -- non-JSON bodies --------------------------------------------------------------------

HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


async def test_html_502_is_reported_with_a_snippet(
    router: respx.MockRouter, sleeps: Sleeps
) -> None:
    router.get("/runs/r1").mock(
        return_value=httpx.Response(502, text=HTML_502, headers={"content-type": "text/html"})
    )
    async with make_transport(sleeps, max_retries=1) as transport:
        with pytest.raises(ServerError) as info:
            await transport.request_json("GET", "/runs/r1", action="get run r1")
    message = str(info.value)
    assert "Bad Gateway" in message
    assert "non-JSON body" in message
    assert "JSONDecodeError" not in message
    assert "Expecting value" not in message
    assert info.value.body_snippet is not None
    assert "502 Bad Gateway" in info.value.body_snippet
    assert "\n" not in info.value.body_snippet
    assert not isinstance(info.value.__cause__, ValueError)


async def test_200_with_non_json_body_is_a_server_error(
    router: respx.MockRouter, sleeps: Sleeps
) -> None:
    router.get("/runs/r1").mock(return_value=httpx.Response(200, text="<html>login</html>"))
    async with make_transport(sleeps) as transport:
        with pytest.raises(ServerError) as info:
            await transport.request_json("GET", "/runs/r1", action="get run r1")
    assert "not JSON" in str(info.value)
    assert "login" in str(info.value)
    assert info.value.status_code == 200
    assert info.value.__cause__ is None


async def test_empty_body_decodes_to_none(router: respx.MockRouter, sleeps: Sleeps) -> None:
    router.delete("/runs/r1").mock(return_value=httpx.Response(204))
    async with make_transport(sleeps) as transport:
        assert await transport.request_json("DELETE", "/runs/r1", action="delete run r1") is None


def test_bodies_share_the_strings_of_their_keys(sleeps: Sleeps) -> None:
    """10,000 kept runs hold one copy of each key, not 10,000 (issue 16, memory)."""
    transport = make_transport(sleeps)
    a = transport.decode(response(200, content=b'{"created_at": 1, "status": "done"}'), "a")
    b = transport.decode(response(200, content=b'{"created_at": 2, "status": "done"}'), "b")
    assert [k for k in a] == [k for k in b] == ["created_at", "status"]
    assert all(x is y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": NaN}', "nan"),
        (b'{"big": 123456789012345678901234567890}', {"big": 123456789012345678901234567890}),
        (b'{"low": -9223372036854775809}', {"low": -9223372036854775809}),
    ],
)
def test_what_json_reads_is_still_read(sleeps: Sleeps, body: bytes, expected: object) -> None:
    value = make_transport(sleeps).decode(response(200, content=body), "read x")
    if expected == "nan":
        assert value["a"] != value["a"]
    else:
        assert value == expected


def test_long_snippet_is_truncated() -> None:
    error = error_from_response(response(502, text="x" * 5000), backend=BACKEND, action="a")
    assert error.body_snippet is not None
    assert len(error.body_snippet) <= 301
    assert len(str(error)) < 1000


def test_empty_error_body() -> None:
    error = error_from_response(response(500), backend=BACKEND, action="get run r1")
    assert isinstance(error, ServerError)
    assert "empty body" in str(error)
    assert error.body_snippet is None


# -- error body shapes -----------------------------------------------------------------


def test_openai_error_shape() -> None:
    body = {
        "error": {
            "message": "Invalid 'assistant_id': 'asst_x' does not exist.",
            "type": "invalid_request_error",
            "param": "assistant_id",
            "code": "not_found_x",
        }
    }
    error = error_from_response(response(400, json=body), backend=BACKEND, action="create run")
    assert isinstance(error, BadRequest)
    assert "Invalid 'assistant_id'" in str(error)
    assert error.code == "not_found_x"
    assert error.status_code == 400
    body["error"]["code"] = None  # type: ignore[index]
    error = error_from_response(response(400, json=body), backend=BACKEND, action="create run")
    assert error.code == "invalid_request_error"


def test_plain_message_shape() -> None:
    error = error_from_response(
        response(409, json={"message": "thread t1 already has an active run"}),
        backend=BACKEND,
        action="create run on thread t1",
    )
    assert isinstance(error, Conflict)
    assert "already has an active run" in str(error)
    assert "create run on thread t1" in str(error)


def test_fastapi_detail_string() -> None:
    error = error_from_response(
        response(404, json={"detail": "Thread not found"}), backend=BACKEND, action="get thread t1"
    )
    assert isinstance(error, NotFound)
    assert "Thread not found" in str(error)
    assert "check the id and the base_url" in str(error)


def test_fastapi_validation_list() -> None:
    body = {
        "detail": [
            {"loc": ["body", "assistant_id"], "msg": "Field required", "type": "missing"},
            {"loc": ["body", "input", "n"], "msg": "not an int", "type": "int_parsing"},
            {"loc": ["body", "input", "n"], "msg": "too big", "type": "x"},
        ]
    }
    error = error_from_response(response(422, json=body), backend=BACKEND, action="create run")
    assert isinstance(error, BadRequest)
    assert error.field_errors == {
        "assistant_id": ["Field required"],
        "input.n": ["not an int", "too big"],
    }
    assert "assistant_id: Field required" in str(error)


def test_aspnet_problem_details() -> None:
    body = {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": {"Message": ["too long"], "Instructions": "bad"},
        "traceId": "00-abc-01",
    }
    error = error_from_response(
        response(400, json=body, headers={"content-type": "application/problem+json"}),
        backend=BACKEND,
        action="create run",
    )
    assert isinstance(error, BadRequest)
    assert error.field_errors == {"Message": ["too long"], "Instructions": ["bad"]}
    assert "One or more validation errors occurred." in str(error)
    assert "Message: too long" in str(error)


def test_problem_json_title_and_detail() -> None:
    body = {"title": "Not Found", "status": 404, "detail": "No run r9"}
    error = error_from_response(response(404, json=body), backend=BACKEND, action="get run r9")
    assert isinstance(error, NotFound)
    assert "Not Found: No run r9" in str(error)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (422, BadRequest),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (599, ServerError),
        (418, ApiError),
    ],
)
def test_status_classes(status: int, cls: type[ApiError]) -> None:
    error = error_from_response(
        response(status, json={"message": "said"}), backend=BACKEND, action="do it"
    )
    assert type(error) is cls
    assert error.status_code == status
    assert error.backend == BACKEND
    assert str(error).startswith(f"{BACKEND}: do it failed: HTTP {status}")
    assert "said" in str(error)


def test_rate_limited_retry_after() -> None:
    error = error_from_response(
        response(429, json={"message": "quota"}, headers={"Retry-After": "3"}),
        backend=BACKEND,
        action="list runs",
    )
    assert isinstance(error, RateLimited)
    assert error.retry_after == 3.0
    assert "max_concurrency" in str(error)


async def test_transport_raises_mapped_classes(router: respx.MockRouter, sleeps: Sleeps) -> None:
    router.get("/a").mock(return_value=httpx.Response(401, json={"message": "bad key"}))
    router.get("/b").mock(return_value=httpx.Response(403, json={"message": "scope"}))
    router.get("/c").mock(
        return_value=httpx.Response(429, json={"message": "quota"}, headers={"Retry-After": "4"})
    )
    async with make_transport(sleeps, max_retries=0) as transport:
        with pytest.raises(Unauthorized):
            await transport.request("GET", "/a", action="a")
        with pytest.raises(Forbidden):
            await transport.request("GET", "/b", action="b")
        with pytest.raises(RateLimited) as info:
            await transport.request("GET", "/c", action="c")
    assert info.value.retry_after == 4.0


async def test_error_hook_replaces_error(router: respx.MockRouter, sleeps: Sleeps) -> None:
    router.get("/threads/t1").mock(return_value=httpx.Response(404, json={"message": "gone"}))

    def hook(error: ApiError) -> ApiError:
        return NotFound("retired here", status_code=error.status_code, backend=error.backend)

    async with make_transport(sleeps, error_hook=hook) as transport:
        with pytest.raises(NotFound, match="retired here"):
            await transport.request("GET", "/threads/t1", action="get thread t1")


# -- secrets ----------------------------------------------------------------------------


async def test_secret_echoed_in_error_body_is_redacted(
    router: respx.MockRouter, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}
    router.get("/a").mock(return_value=httpx.Response(401, json=body))
    router.get("/b").mock(return_value=httpx.Response(500, text=f"<html>key={KEY}</html>"))
    async with make_transport(sleeps, max_retries=2) as transport:
        with pytest.raises(Unauthorized) as info_a:
            await transport.request("GET", "/a", action="a")
        with pytest.raises(ServerError) as info_b:
            await transport.request("GET", "/b", action="b")
    for error in (info_a.value, info_b.value):
        assert KEY not in str(error)
        assert KEY not in repr(error)
        assert error.body_snippet is not None
        assert KEY not in error.body_snippet
        assert "***" in str(error)
    assert caplog.records, "the retries should have been logged"
    for record in caplog.records:
        assert KEY not in record.getMessage()


async def test_secret_in_httpx_exception_is_redacted(
    router: respx.MockRouter, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect with Authorization: Bearer {KEY}")

    router.get("/a").mock(side_effect=fail)
    async with make_transport(sleeps, max_retries=2) as transport:
        with pytest.raises(TransportError) as info:
            await transport.request("GET", "/a", action="a")
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)
    for record in caplog.records:
        assert KEY not in record.getMessage()


def test_secret_cut_by_the_snippet_is_still_hidden() -> None:
    text = "x" * 290 + KEY + " tail"
    error = error_from_response(
        response(502, text=text), backend=BACKEND, action="a", secrets=[KEY]
    )
    assert error.body_snippet is not None
    assert KEY[:10] not in error.body_snippet
    assert KEY[:10] not in str(error)


def test_redact() -> None:
    assert redact(f"key {KEY} again {KEY}", [KEY]) == "key *** again ***"
    assert redact("Authorization: Bearer abc.DEF-123_x/y+z=", []) == "Authorization: Bearer ***"
    assert redact("authorization: bearer eyJhbGciOi.eyJzdWIi.sig", []) == (
        "authorization: bearer ***"
    )
    # short "secrets" would mangle everything: ignored
    assert redact("a test message", ["x", "a", ""]) == "a test message"


# -- headers ----------------------------------------------------------------------------


async def test_user_agent_and_headers(router: respx.MockRouter, sleeps: Sleeps) -> None:
    route = router.get("/runs").mock(return_value=httpx.Response(200, json=[]))
    async with make_transport(sleeps, params={"api-version": "2024-05-01-preview"}) as transport:
        await transport.request(
            "GET", "/runs", action="list runs", params={"limit": 5, "after": None, "asc": True}
        )
    request = route.calls.last.request
    assert f"prefect-agent-runs/{__version__}" == USER_AGENT
    assert request.headers["user-agent"] == f"prefect-agent-runs/{__version__}"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.url.params["api-version"] == "2024-05-01-preview"
    assert request.url.params["limit"] == "5"
    assert request.url.params["asc"] == "true"
    assert "after" not in request.url.params


async def test_injected_client_gets_user_agent(sleeps: Sleeps) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client = httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(handler))
    transport = make_transport(sleeps, http_client=client)
    await transport.request("GET", "/x", action="x")
    await transport.aclose()
    assert not client.is_closed  # not ours to close
    await client.aclose()
    assert seen[0].headers["user-agent"] == USER_AGENT


# -- pickling ----------------------------------------------------------------------------


def _run() -> Run:
    return Run(id="r1", thread_id="t1", status=RunStatus.FAILED, raw_status="failed", backend="b")


@pytest.mark.parametrize(
    "error",
    [
        AgentRunsError("base", backend="b"),
        ApiError("api", status_code=418, code="teapot", request_id="q", backend="b"),
        BadRequest("bad", status_code=400, field_errors={"f": ["too long"]}, body_snippet="s"),
        Unauthorized("no", status_code=401),
        Forbidden("no", status_code=403),
        NotFound("no", status_code=404),
        Conflict("no", status_code=409),
        RateLimited("slow", status_code=429, retry_after=2.5),
        ServerError("5xx", status_code=502),
        TransportError("t", backend="b", reached_server=False),
        RunFailed("failed", run=_run()),
        RunCancelled("cancelled", run=_run()),
        RunExpired("expired", run=_run()),
        RunTimedOut("timed out", run=_run(), cancelled=True),
        RunRequiresAction("tools", run=_run(), tool_names=["lookup"]),
        NotSupported("nope", backend="b"),
        ValidationError("bad input", backend="b"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_round_trip(error: AgentRunsError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__
    assert copy.args == error.args


async def test_raised_errors_pickle_round_trip(router: respx.MockRouter, sleeps: Sleeps) -> None:
    router.get("/a").mock(return_value=httpx.Response(400, json={"errors": {"m": ["x"]}}))
    router.get("/b").mock(side_effect=httpx.ReadTimeout("slow"))
    async with make_transport(sleeps, max_retries=0) as transport:
        with pytest.raises(BadRequest) as info_a:
            await transport.request("GET", "/a", action="a")
        with pytest.raises(TransportError) as info_b:
            await transport.request("GET", "/b", action="b")
    for error in (info_a.value, info_b.value):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
    assert pickle.loads(pickle.dumps(info_a.value)).field_errors == {"m": ["x"]}
