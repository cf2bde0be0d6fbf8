"""The Assistants API emulator: behaviour, and its wire contract against OpenAI's OpenAPI document.

Every request body the tests send (and the emulator accepts) and every JSON body or SSE event
the emulator answers is validated against ``openai-openapi.yaml`` when each test ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from prefect_agent_runs.testing import AssistantsEmulator, FakeClock, pytest_plugin
from prefect_agent_runs.testing.assistants import TERMINAL_STATUSES
from prefect_agent_runs.testing.openapi_contract import (
    OPENAI_LIVE_API_PATCHES,
    ContractViolation,
    OpenApiContract,
    load_openapi,
)

# every Assistants method of the openai SDK warns that the API is deprecated
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# the plugin's fixture (normally registered through the pytest11 entry point)
assistants_emulator = pytest_plugin.assistants_emulator


@pytest.fixture(scope="session")
def contract(openai_openapi_path: Path) -> OpenApiContract:
    return OpenApiContract(openai_openapi_path, patches=OPENAI_LIVE_API_PATCHES)


def check_traffic(contract: OpenApiContract, emu: AssistantsEmulator) -> int:
    """Validate every recorded exchange against the document; return how many bodies."""
    checked = 0
    for rec in emu.requests:
        template = contract.match_path(rec.path)
        if template is None or rec.method.lower() not in contract.document["paths"][template]:
            assert rec.status == 404, f"{rec.method} {rec.path} is not in the document"
            contract.validate_component("ErrorResponse", rec.response_json)
            checked += 1
            continue
        accepted = rec.status is not None and (rec.status < 400 or rec.fault is not None)
        if rec.json is not None and accepted:
            contract.validate_request(rec.method, template, rec.json)
            checked += 1
        if rec.response_json is not None:
            assert rec.status is not None
            contract.validate_response(rec.method, template, rec.status, rec.response_json)
            checked += 1
        for name, data in rec.stream_events:
            contract.validate_component("AssistantStreamEvent", {"event": name, "data": data})
            checked += 1
    return checked


@pytest.fixture
def make_emu(contract: OpenApiContract) -> Iterator[Callable[..., AssistantsEmulator]]:
    """Start emulators; at teardown validate all their traffic against the contract."""
    started: list[AssistantsEmulator] = []

    def make(**kwargs: Any) -> AssistantsEmulator:
        emu = AssistantsEmulator(**kwargs)
        emu.start()
        started.append(emu)
        return emu

    try:
        yield make
    finally:
        for emu in started:
            emu.stop()
    for emu in started:
        check_traffic(contract, emu)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def client(emu: AssistantsEmulator, **headers: str) -> httpx.Client:
    return httpx.Client(
        base_url=emu.base_url,
        headers={"Authorization": "Bearer test", "OpenAI-Beta": "assistants=v2", **headers},
        timeout=10,
    )


def sdk(emu: AssistantsEmulator, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url, api_key="test", **kwargs)


def new_thread(http: httpx.Client, text: str = "hello") -> str:
    r = http.post("/threads", json={"messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def create_run(
    http: httpx.Client, thread_id: str, timeout: float = 10, **body: Any
) -> httpx.Response:
    return http.post(
        f"/threads/{thread_id}/runs", json={"assistant_id": "asst_test", **body}, timeout=timeout
    )


def script(**spec: Any) -> dict[str, str]:
    return {"emulator": json.dumps(spec)}


def get_run(http: httpx.Client, thread_id: str, run_id: str) -> dict[str, Any]:
    r = http.get(f"/threads/{thread_id}/runs/{run_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


# -- the contract helper itself -------------------------------------------------------------


def test_contract_catches_violations(contract: OpenApiContract) -> None:
    run = {"id": "run_1", "object": "thread.run", "status": "completed"}
    with pytest.raises(ContractViolation, match="required property"):
        contract.validate_response("GET", "/threads/{thread_id}/runs/{run_id}", 200, run)
    with pytest.raises(ContractViolation, match="assistant_id"):
        contract.validate_request("POST", "/threads/{thread_id}/runs", {"model": "x"})
    with pytest.raises(ContractViolation):
        contract.validate_response("GET", "/threads/{thread_id}", 404, {"error": {"message": 1}})
    assert contract.match_path("/v1/threads/runs") == "/threads/runs"
    assert contract.match_path("/v1/threads/t_1/runs/r_1/cancel") == (
        "/threads/{thread_id}/runs/{run_id}/cancel"
    )


def test_contract_missing_document_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_openapi(tmp_path / "nope.yaml")


# -- lifecycle with a fake clock ------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["completed", "failed", "expired", "incomplete", "never"])
def test_lifecycle_per_outcome(
    make_emu: Callable[..., AssistantsEmulator], clock: FakeClock, outcome: str
) -> None:
    emu = make_emu(clock=clock, queue_seconds=1, run_seconds=2, outcome=outcome)
    with client(emu) as http:
        tid = new_thread(http, "hello")
        r = create_run(http, tid)
        assert r.status_code == 200, r.text
        run = r.json()
        assert r.headers["openai-poll-after-ms"] == "100"
        assert r.headers["x-request-id"].startswith("req_")
        assert run["status"] == "queued"
        assert run["id"].startswith("run_") and len(run["id"]) == 4 + 24
        assert run["expires_at"] == run["created_at"] + 600
        assert run["usage"] is None and run["started_at"] is None
        clock.advance(1)
        run = get_run(http, tid, run["id"])
        assert run["status"] == "in_progress" and run["started_at"] is not None
        clock.advance(1.9)
        assert get_run(http, tid, run["id"])["status"] == "in_progress"
        clock.advance(0.2)
        run = get_run(http, tid, run["id"])
        msgs = http.get(f"/threads/{tid}/messages", params={"run_id": run["id"]}).json()["data"]
        if outcome == "never":
            clock.advance(10_000)
            assert get_run(http, tid, run["id"])["status"] == "in_progress"
            assert msgs == []
            return
        assert run["status"] == outcome
        assert run["usage"] is not None
        if outcome == "completed":
            assert run["completed_at"] is not None
            assert [m["content"][0]["text"]["value"] for m in msgs] == ["echo: hello"]
            assert msgs[0]["run_id"] == run["id"] and msgs[0]["role"] == "assistant"
            steps = http.get(f"/threads/{tid}/runs/{run['id']}/steps").json()["data"]
            assert steps[0]["step_details"]["message_creation"]["message_id"] == msgs[0]["id"]
        else:
            assert msgs == []
        if outcome == "failed":
            assert run["last_error"]["code"] == "server_error" and run["failed_at"] is not None
        if outcome == "incomplete":
            assert run["incomplete_details"] == {"reason": "max_completion_tokens"}


def test_metadata_scripts_one_run(
    make_emu: Callable[..., AssistantsEmulator], clock: FakeClock
) -> None:
    emu = make_emu(clock=clock, run_seconds=1)
    with client(emu) as http:
        tid = new_thread(http)
        meta = script(seconds=5, outcome="failed", queue_seconds=0.5, error="boom")
        run = create_run(http, tid, metadata=meta).json()
        assert run["metadata"] == meta
        clock.advance(0.6)
        assert get_run(http, tid, run["id"])["status"] == "in_progress"
        clock.advance(4)
        assert get_run(http, tid, run["id"])["status"] == "in_progress"
        clock.advance(1)
        run = get_run(http, tid, run["id"])
        assert run["status"] == "failed" and run["last_error"]["message"] == "boom"
        # the next run on the thread uses the constructor defaults
        run2 = create_run(http, tid).json()
        clock.advance(1)
        assert get_run(http, tid, run2["id"])["status"] == "completed"
        bad = create_run(http, tid, metadata={"emulator": '{"outcome": "exploded"}'})
        assert bad.status_code == 400
        assert error_of(bad)["param"] == "metadata.emulator"


def test_one_active_run_per_thread(
    make_emu: Callable[..., AssistantsEmulator], clock: FakeClock
) -> None:
    emu = make_emu(clock=clock, run_seconds=1)
    with client(emu) as http:
        tid = new_thread(http)
        run = create_run(http, tid).json()
        second = create_run(http, tid)
        assert second.status_code == 400
        err = error_of(second)
        assert err["type"] == "invalid_request_error"
        assert err["message"] == f"Thread {tid} already has an active run {run['id']}."
        msg = http.post(f"/threads/{tid}/messages", json={"role": "user", "content": "more"})
        assert msg.status_code == 400
        assert error_of(msg)["message"] == (
            f"Can't add messages to {tid} while a run {run['id']} is active."
        )
        clock.advance(1)
        assert create_run(http, tid).status_code == 200
        assert len(emu.runs(tid)) == 2


def test_cancel(make_emu: Callable[..., AssistantsEmulator], clock: FakeClock) -> None:
    emu = make_emu(clock=clock, run_seconds=10, cancel_seconds=1)
    with client(emu) as http:
        tid = new_thread(http)
        run = create_run(http, tid).json()
        r = http.post(f"/threads/{tid}/runs/{run['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelling"
        again = http.post(f"/threads/{tid}/runs/{run['id']}/cancel")
        assert again.status_code == 400
        clock.advance(1)
        run = get_run(http, tid, run["id"])
        assert run["status"] == "cancelled" and run["cancelled_at"] is not None
        r = http.post(f"/threads/{tid}/runs/{run['id']}/cancel")
        assert r.status_code == 400
        assert error_of(r)["message"] == "Cannot cancel run with status 'cancelled'."
        # cancel_seconds=0 (default): cancelled at once; cancel on completed: 400
    emu2 = make_emu(clock=clock, run_seconds=10)
    with client(emu2) as http:
        tid = new_thread(http)
        run = create_run(http, tid).json()
        r = http.post(f"/threads/{tid}/runs/{run['id']}/cancel")
        assert r.json()["status"] == "cancelled"
        done = create_run(http, tid, metadata=script(seconds=0)).json()
        r = http.post(f"/threads/{tid}/runs/{done['id']}/cancel")
        assert r.status_code == 400
        assert error_of(r)["message"] == "Cannot cancel run with status 'completed'."


def test_not_found_errors(make_emu: Callable[..., AssistantsEmulator]) -> None:
    emu = make_emu()
    with client(emu) as http:
        r = http.get("/threads/thread_nope")
        assert r.status_code == 404
        assert error_of(r)["message"] == "No thread found with id 'thread_nope'."
        tid = new_thread(http)
        r = http.get(f"/threads/{tid}/runs/run_nope")
        assert r.status_code == 404
        assert error_of(r)["message"] == "No run found with id 'run_nope'."
        r = create_run(http, tid, assistant_id="gpt-4o")
        assert r.status_code == 404
        assert error_of(r)["message"] == "No assistant found with id 'gpt-4o'."
        r = http.post(f"/threads/{tid}/runs", json={"model": "gpt-4o"})
        assert r.status_code == 400
        assert error_of(r)["code"] == "missing_required_parameter"
        r = create_run(http, tid, bogus=1)
        assert r.status_code == 400 and error_of(r)["param"] == "bogus"
        r = http.get("/nowhere")
        assert r.status_code == 404 and "Invalid URL" in error_of(r)["message"]
        r = http.delete(f"/threads/{tid}")
        assert r.json() == {"id": tid, "object": "thread.deleted", "deleted": True}
        assert http.get(f"/threads/{tid}").status_code == 404


BAD_TOOL_RESOURCES: list[Any] = [
    "files",
    {"code_interpreter": "f1"},
    {"code_interpreter": {"file_ids": "f1"}},
    {"code_interpreter": {"file_ids": [1]}},
    {"code_interpreter": {"file_ids": [f"f{i}" for i in range(21)]}},
    {"file_search": {"vector_store_ids": ["vs1", "vs2"]}},
    {"file_search": {}},
]
BAD_ATTACHMENTS: list[Any] = [
    "f1",
    [{"file_id": "f1"}],
    [{"tools": [{"type": "file_search"}]}],
    [{"file_id": 7, "tools": []}],
    [{"file_id": "f1", "tools": [{"type": "web_search"}]}],
    [{"file_id": "f1", "tools": "file_search"}],
]


@pytest.mark.parametrize("tool_resources", BAD_TOOL_RESOURCES, ids=repr)
def test_invalid_tool_resources_get_a_400(
    make_emu: Callable[..., AssistantsEmulator], tool_resources: Any
) -> None:
    # schemathesis found these accepted and echoed back; the real API answers 400
    emu = make_emu()
    with client(emu) as http:
        r = http.post("/threads", json={"tool_resources": tool_resources})
        assert r.status_code == 400, r.text
        assert error_of(r)["param"].startswith("tool_resources")
        tid = new_thread(http)
        r = http.post(f"/threads/{tid}", json={"tool_resources": tool_resources})
        assert r.status_code == 400 or tool_resources == {"file_search": {}}, r.text
        r = http.post("/assistants", json={"model": "gpt-4o", "tool_resources": tool_resources})
        assert r.status_code == 400, r.text
    assert emu.runs() == []


@pytest.mark.parametrize("attachments", BAD_ATTACHMENTS, ids=repr)
def test_invalid_attachments_get_a_400(
    make_emu: Callable[..., AssistantsEmulator], attachments: Any
) -> None:
    emu = make_emu()
    with client(emu) as http:
        tid = new_thread(http)
        message = {"role": "user", "content": "hi", "attachments": attachments}
        r = http.post(f"/threads/{tid}/messages", json=message)
        assert r.status_code == 400, r.text
        assert error_of(r)["param"].startswith("attachments")
        r = http.post("/threads", json={"messages": [message]})
        assert r.status_code == 400, r.text
        assert error_of(r)["param"].startswith("messages[0].attachments")


def test_valid_tool_resources_and_attachments_are_kept(
    make_emu: Callable[..., AssistantsEmulator],
) -> None:
    emu = make_emu()
    resources = {
        "code_interpreter": {"file_ids": ["f1"]},
        "file_search": {"vector_store_ids": ["vs1"]},
    }
    attachments = [{"file_id": "f1", "tools": [{"type": "code_interpreter"}]}]
    with client(emu) as http:
        thread = http.post("/threads", json={"tool_resources": resources}).json()
        assert thread["tool_resources"] == resources
        message = {"role": "user", "content": "hi", "attachments": attachments}
        r = http.post(f"/threads/{thread['id']}/messages", json=message)
        assert r.status_code == 200 and r.json()["attachments"] == attachments


def test_threads_messages_and_assistants(make_emu: Callable[..., AssistantsEmulator]) -> None:
    emu = make_emu(run_seconds=0)
    with client(emu) as http:
        r = http.post(
            "/assistants", json={"model": "gpt-4o-mini", "name": "echo", "instructions": "be brief"}
        )
        asst = r.json()
        assert asst["id"].startswith("asst_")
        assert http.get(f"/assistants/{asst['id']}").json() == asst
        tid = new_thread(http, "one")
        r = http.post(f"/threads/{tid}", json={"metadata": {"k": "v"}})
        assert r.json()["metadata"] == {"k": "v"}
        parts = [{"type": "text", "text": "two"}]
        r = http.post(f"/threads/{tid}/messages", json={"role": "user", "content": parts})
        assert r.json()["content"][0]["text"] == {"value": "two", "annotations": []}
        run = create_run(
            http,
            tid,
            assistant_id=asst["id"],
            additional_messages=[{"role": "user", "content": "three"}],
            additional_instructions="and kind",
        ).json()
        assert run["model"] == "gpt-4o-mini"
        assert run["instructions"] == "be brief\nand kind"
        page = http.get(f"/threads/{tid}/messages", params={"order": "asc"}).json()
        texts = [m["content"][0]["text"]["value"] for m in page["data"]]
        assert texts == ["one", "two", "three", "echo: three"]
        mid = page["data"][-1]["id"]
        assert http.get(f"/threads/{tid}/messages/{mid}").json()["run_id"] == run["id"]
        r = http.post(f"/threads/{tid}/runs/{run['id']}", json={"metadata": {"a": "b"}})
        assert r.json()["metadata"] == {"a": "b"}


# -- pagination -----------------------------------------------------------------------------


def test_pagination_over_250_runs(
    make_emu: Callable[..., AssistantsEmulator], clock: FakeClock
) -> None:
    emu = make_emu(clock=clock, run_seconds=0)
    with client(emu) as http:
        tid = new_thread(http)
        created = [create_run(http, tid).json()["id"] for _ in range(250)]

        def walk(order: str, cursor: str, start: str | None = None) -> list[str]:
            ids: list[str] = []
            pages = []
            params: dict[str, Any] = {"order": order, "limit": 100}
            if start:
                params[cursor] = start
            while True:
                page = http.get(f"/threads/{tid}/runs", params=params).json()
                assert page["object"] == "list"
                page_ids = [x["id"] for x in page["data"]]
                assert page["first_id"] == page_ids[0] and page["last_id"] == page_ids[-1]
                pages.append((len(page_ids), page["has_more"]))
                ids.extend(page_ids if cursor == "after" else reversed(page_ids))
                if not page["has_more"]:
                    break
                params[cursor] = page["last_id"] if cursor == "after" else page["first_id"]
            assert pages == [(100, True), (100, True), (50, False)]
            return ids

        assert walk("asc", "after") == created
        assert walk("desc", "after") == created[::-1]
        # backwards from the end with `before`: same items, pages nearest the cursor first
        tail = http.get(f"/threads/{tid}/runs", params={"order": "asc", "after": created[-2]})
        assert [x["id"] for x in tail.json()["data"]] == [created[-1]]
        ids: list[str] = []
        params: dict[str, Any] = {"order": "asc", "limit": 100, "before": created[-1]}
        while True:
            page = http.get(f"/threads/{tid}/runs", params=params).json()
            ids[:0] = [x["id"] for x in page["data"]]
            if not page["has_more"]:
                break
            params["before"] = page["first_id"]
        assert ids == created[:-1]
        default = http.get(f"/threads/{tid}/runs").json()
        assert len(default["data"]) == 20 and default["first_id"] == created[-1]
        for bad in (0, 101):
            r = http.get(f"/threads/{tid}/runs", params={"limit": bad})
            assert r.status_code == 400 and error_of(r)["param"] == "limit"
        r = http.get(f"/threads/{tid}/runs", params={"order": "sideways"})
        assert r.status_code == 400
        empty = http.get(f"/threads/{new_thread(http)}/runs").json()
        assert empty == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }


# -- tools ----------------------------------------------------------------------------------


def test_requires_action_and_submit_tool_outputs(
    make_emu: Callable[..., AssistantsEmulator], clock: FakeClock
) -> None:
    emu = make_emu(clock=clock, run_seconds=1, outcome="requires_action")
    with client(emu) as http:
        tid = new_thread(http, "Oslo")
        run = create_run(http, tid).json()
        r = http.post(
            f"/threads/{tid}/runs/{run['id']}/submit_tool_outputs",
            json={"tool_outputs": [{"tool_call_id": "call_x", "output": "1"}]},
        )
        assert r.status_code == 400
        assert error_of(r)["message"] == 'Runs in status "in_progress" do not accept tool outputs.'
        clock.advance(1)
        run = get_run(http, tid, run["id"])
        assert run["status"] == "requires_action"
        (call,) = run["required_action"]["submit_tool_outputs"]["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
        r = http.post(
            f"/threads/{tid}/runs/{run['id']}/submit_tool_outputs",
            json={"tool_outputs": [{"tool_call_id": "call_wrong", "output": "1"}]},
        )
        assert r.status_code == 400
        r = http.post(
            f"/threads/{tid}/runs/{run['id']}/submit_tool_outputs",
            json={"tool_outputs": [{"tool_call_id": call["id"], "output": "22C"}]},
        )
        assert r.status_code == 200 and r.json()["status"] == "in_progress"
        assert r.json()["required_action"] is None
        clock.advance(1)
        run = get_run(http, tid, run["id"])
        assert run["status"] == "completed"
        msgs = http.get(f"/threads/{tid}/messages", params={"run_id": run["id"]}).json()
        assert msgs["data"][0]["content"][0]["text"]["value"] == "echo: Oslo [tool: 22C]"
        # scripted tool name and arguments; an unanswered call expires
        meta = script(outcome="requires_action", tool="lookup", tool_arguments={"q": 1})
        run = create_run(http, tid, metadata=meta).json()
        clock.advance(1)
        run = get_run(http, tid, run["id"])
        (call,) = run["required_action"]["submit_tool_outputs"]["tool_calls"]
        assert call["function"] == {"name": "lookup", "arguments": '{"q": 1}'}
        clock.advance(600)
        assert get_run(http, tid, run["id"])["status"] == "expired"


# -- auth, faults, retirement ---------------------------------------------------------------


def test_auth(make_emu: Callable[..., AssistantsEmulator]) -> None:
    emu = make_emu(api_key="sk-right-key")
    with httpx.Client(base_url=emu.base_url) as http:
        r = http.post("/threads", json={})
        assert r.status_code == 401 and "didn't provide an API key" in error_of(r)["message"]
        r = http.post("/threads", json={}, headers={"Authorization": "Bearer sk-wrong-key"})
        assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
        r = http.post("/threads", json={}, headers={"Authorization": "Bearer sk-right-key"})
        assert r.status_code == 200
        # Azure style: api-key header, api-version query, /openai prefix
        r = httpx.post(
            f"{emu.azure_endpoint}/openai/threads",
            params={"api-version": "2024-05-01-preview"},
            headers={"api-key": "sk-right-key"},
            json={},
        )
        assert r.status_code == 200
    assert emu.requests[1].headers["authorization"] == "<redacted>"
    assert emu.requests[-1].headers["api-key"] == "<redacted>"
    assert emu.requests[-1].query == {"api-version": "2024-05-01-preview"}
    azure = openai.AzureOpenAI(
        azure_endpoint=emu.azure_endpoint,
        api_key="sk-right-key",
        api_version="2024-05-01-preview",
        max_retries=0,
    )
    assert azure.beta.threads.create().id.startswith("thread_")
    with pytest.raises(openai.AuthenticationError):
        sdk(emu, max_retries=0).beta.threads.create()


def test_faults(make_emu: Callable[..., AssistantsEmulator], clock: FakeClock) -> None:
    emu = make_emu(clock=clock, run_seconds=1)
    with client(emu) as http:
        tid = new_thread(http)
        emu.inject_faults(rate=1.0, statuses=(429,), retry_after=0.5)
        r = http.get(f"/threads/{tid}")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "500"
        assert error_of(r)["code"] == "rate_limit_exceeded"
        emu.inject_faults(rate=1.0, statuses=(502,))
        r = http.get(f"/threads/{tid}")
        assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
        assert r.text == "<html>502 Bad Gateway</html>"
        emu.inject_faults(rate=1.0, statuses=(500,), paths=["/threads/*/runs"])
        assert http.get(f"/threads/{tid}").status_code == 200
        assert create_run(http, tid).status_code == 500
        assert emu.runs(tid) == []
        # after_commit: the run is created but the client sees a 500; a blind retry hits 400
        emu.inject_faults(rate=1.0, statuses=(500,), paths=["/threads/*/runs"], after_commit=True)
        assert create_run(http, tid).status_code == 500
        emu.clear_faults()
        (committed,) = emu.runs(tid)
        retry = create_run(http, tid)
        assert retry.status_code == 400 and committed["id"] in error_of(retry)["message"]
        # a share of requests with a fixed seed is reproducible; slow answers
        emu.inject_faults(rate=0.5, statuses=(503,), seed=7)
        first = [http.get(f"/threads/{tid}").status_code for _ in range(20)]
        emu.inject_faults(rate=0.5, statuses=(503,), seed=7)
        assert [http.get(f"/threads/{tid}").status_code for _ in range(20)] == first
        assert set(first) == {200, 503}
        emu.inject_faults(rate=1.0, statuses=(), delay_seconds=0.5)
        with pytest.raises(httpx.ReadTimeout):
            http.get(f"/threads/{tid}", timeout=0.1)
        # committed, then answered too late: the client times out, yet the run exists
        clock.advance(1)
        emu.inject_faults(rate=1.0, statuses=(), delay_seconds=0.5, after_commit=True)
        with pytest.raises(httpx.ReadTimeout):
            create_run(http, tid, timeout=0.1)
        emu.clear_faults()
        assert len(emu.runs(tid)) == 2
        assert http.get(f"/threads/{tid}").status_code == 200
    assert [rec.fault for rec in emu.requests[:3]] == [None, 429, 502]


def test_sdk_retries_through_faults(make_emu: Callable[..., AssistantsEmulator]) -> None:
    emu = make_emu(run_seconds=0.05)
    emu.inject_faults(rate=1.0, statuses=(503,), retry_after=0.01, methods=["POST"])
    with pytest.raises(openai.InternalServerError):
        sdk(emu, max_retries=2).beta.threads.create()
    assert len(emu.requests) == 3


def test_retired(make_emu: Callable[..., AssistantsEmulator]) -> None:
    emu = make_emu(retired=True)
    with client(emu) as http:
        for method, path in [("POST", "/threads"), ("GET", "/threads/thread_1/runs/run_1")]:
            r = http.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 404
            assert "Assistants API" in error_of(r)["message"]
    with pytest.raises(openai.NotFoundError, match="Assistants API"):
        sdk(emu, max_retries=0).beta.threads.create_and_run(assistant_id="asst_1")


# -- SSE -------------------------------------------------------------------------------------


def parse_sse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        data = fields["data"]
        events.append((fields["event"], data if data == "[DONE]" else json.loads(data)))
    return events


def test_sse_stream(make_emu: Callable[..., AssistantsEmulator]) -> None:
    emu = make_emu(run_seconds=0.05, queue_seconds=0.02)
    with client(emu) as http:
        body = {
            "assistant_id": "asst_1",
            "stream": True,
            "thread": {"messages": [{"role": "user", "content": "streamed"}]},
        }
        with http.stream("POST", "/threads/runs", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = parse_sse(r.read().decode())
        names = [name for name, _ in events]
        assert names == [
            "thread.created",
            "thread.run.created",
            "thread.run.queued",
            "thread.run.in_progress",
            "thread.message.created",
            "thread.message.in_progress",
            "thread.message.delta",
            "thread.message.completed",
            "thread.run.completed",
            "done",
        ]
        assert events[-1] == ("done", "[DONE]")
        assert events[7][1]["content"][0]["text"]["value"] == "echo: streamed"
        run = events[-2][1]
        assert get_run(http, run["thread_id"], run["id"])["status"] == "completed"
        # time is compressed: a 30 s run streams in well under a second of real time
        t0 = time.monotonic()
        r = create_run(
            http,
            run["thread_id"],
            stream=True,
            metadata=script(seconds=30, outcome="requires_action"),
        )
        events = parse_sse(r.text)
        assert time.monotonic() - t0 < 5
        assert [n for n, _ in events][-2:] == ["thread.run.requires_action", "done"]
        run = events[-2][1]
        call = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]
        r = http.post(
            f"/threads/{run['thread_id']}/runs/{run['id']}/submit_tool_outputs",
            json={
                "tool_outputs": [{"tool_call_id": call["id"], "output": "sunny"}],
                "stream": True,
            },
        )
        events = parse_sse(r.text)
        assert events[0][0] == "thread.run.queued"
        assert events[-2][0] == "thread.run.completed"
        assert "[tool: sunny]" in json.dumps(events)


# -- the official openai SDK ---------------------------------------------------------------


def test_openai_sdk_end_to_end(make_emu: Callable[..., AssistantsEmulator]) -> None:
    emu = make_emu(run_seconds=0.05, poll_after_ms=20)
    oai = sdk(emu)
    run = oai.beta.threads.create_and_run_poll(
        assistant_id="asst_sdk",
        thread={"messages": [{"role": "user", "content": "from the sdk"}]},
    )
    assert run.status == "completed"
    messages = oai.beta.threads.messages.list(thread_id=run.thread_id, run_id=run.id)
    assert [m.content[0].text.value for m in messages] == ["echo: from the sdk"]  # type: ignore[union-attr]

    meta = script(outcome="requires_action", seconds=0.05)
    run = oai.beta.threads.runs.create_and_poll(
        thread_id=run.thread_id, assistant_id="asst_sdk", metadata=meta
    )
    assert run.status == "requires_action" and run.required_action is not None
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    run = oai.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=run.thread_id,
        tool_outputs=[{"tool_call_id": call.id, "output": "ok"}],
    )
    assert run.status == "completed"

    with oai.beta.threads.runs.stream(thread_id=run.thread_id, assistant_id="asst_sdk") as stream:
        stream.until_done()
        final = stream.get_final_run()
        texts = [m.content[0].text.value for m in stream.get_final_messages()]  # type: ignore[union-attr]
    assert final.status == "completed" and texts == ["echo: from the sdk"]

    cancelled = oai.beta.threads.runs.cancel(
        run_id=oai.beta.threads.runs.create(
            thread_id=run.thread_id, assistant_id="asst_sdk", metadata=script(outcome="never")
        ).id,
        thread_id=run.thread_id,
    )
    assert cancelled.status == "cancelled"
    assert all(r.status in TERMINAL_STATUSES for r in oai.beta.threads.runs.list(run.thread_id))


def test_openai_sdk_auto_pagination(
    make_emu: Callable[..., AssistantsEmulator], clock: FakeClock
) -> None:
    emu = make_emu(clock=clock, run_seconds=0, poll_after_ms=None)
    oai = sdk(emu)
    thread = oai.beta.threads.create()
    raw = oai.beta.threads.runs.with_raw_response.create(thread.id, assistant_id="asst_page")
    assert "openai-poll-after-ms" not in raw.headers
    created = [raw.parse().id] + [
        oai.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_page").id
        for _ in range(44)
    ]
    listed = [r.id for r in oai.beta.threads.runs.list(thread_id=thread.id, limit=10)]
    assert listed == created[::-1]
    asc = [r.id for r in oai.beta.threads.runs.list(thread_id=thread.id, limit=7, order="asc")]
    assert asc == created
    gets = [r for r in emu.requests if r.method == "GET" and r.route.endswith("/runs")]
    assert len(gets) == 5 + 7


def test_pytest_plugin_fixture(assistants_emulator: AssistantsEmulator) -> None:
    assert assistants_emulator.base_url.endswith("/v1")
    r = httpx.post(f"{assistants_emulator.base_url}/threads", json={})
    assert r.status_code == 200
    assistants_emulator.reset()
    assert assistants_emulator.requests == []


def test_served_app_stop_and_restart(make_emu: Callable[..., AssistantsEmulator]) -> None:
    emu = make_emu()
    port = emu.port
    assert emu.running
    emu.stop()
    assert not emu.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emu.base_url}/threads/x", timeout=1)
    with AssistantsEmulator() as other:
        assert other.port != port or other.running
