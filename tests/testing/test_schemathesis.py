"""schemathesis fuzzes each emulator from its platform's published schema.

Checks: ``not_a_server_error`` and ``response_schema_conformance``, on cases that fit the
schema and cases that do not. Half of the cases are given ids that exist in the emulator,
so that success answers are checked too. The figures are printed (``pytest -s``) and
recorded in docs/backends/*.md.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from prefect_agent_runs.testing import (
    AssistantsEmulator,
    ProjectThreadsEmulator,
    WorkflowRunsEmulator,
)
from prefect_agent_runs.testing.fuzzing import FuzzReport, GenerationMode, fuzz
from prefect_agent_runs.testing.openapi_contract import OPENAI_LIVE_API_PATCHES, load_openapi
from prefect_agent_runs.testing.schemas import (
    LINKAGE_OPENAPI,
    OPENAI_OPENAPI,
    PROJECT_THREADS_SWAGGER,
)

pytestmark = pytest.mark.filterwarnings("ignore")  # hypothesis-jsonschema's format warnings


def _assert_clean(report: FuzzReport) -> None:
    print("\n" + report.summary())
    assert report.failures == [], report.summary()
    assert report.cases > 0


def test_fuzz_workflow_runs_emulator() -> None:
    emu = WorkflowRunsEmulator(run_seconds=0)
    client = TestClient(emu.app)
    ids = []
    for outcome in ("completed", "failed"):
        body = {"workflowId": "wf", "input": {"message": "x"},
                "metadata": {"emulator": json.dumps({"outcome": outcome})}}  # fmt: skip
        ids.append(client.post("/api/v1/runs", json=body).json()["runId"])
    report = fuzz(
        "workflow_runs",
        load_openapi(LINKAGE_OPENAPI),
        emu.app,
        examples=20,
        real_ids=lambda: {"runId": ids},
        keep=lambda method, path: path.startswith("/api/v1/runs"),
    )
    _assert_clean(report)
    assert report.operations == 5


def test_fuzz_project_threads_emulator() -> None:
    emu = ProjectThreadsEmulator(run_seconds=0)
    client = TestClient(emu.app)
    threads = [emu.create_thread([("user", "hi")]) for _ in range(2)]
    runs = [
        client.post(
            f"/api/projects/{emu.project_id}/threads/{t}/runs", json={"message": "m"}
        ).json()["runId"]
        for t in threads
    ]
    ids = {"teamId": [emu.team_id], "projectId": [emu.project_id], "id": [emu.project_id],
           "threadId": threads, "runId": runs}  # fmt: skip
    report = fuzz(
        "project_threads",
        load_openapi(PROJECT_THREADS_SWAGGER),
        emu.app,
        examples=20,
        real_ids=lambda: ids,
        keep=lambda method, path: "/threads" in path or path.endswith("/chat"),
    )
    _assert_clean(report)
    assert report.operations == 5


def test_fuzz_assistants_emulator() -> None:
    emu = AssistantsEmulator(run_seconds=0)
    client = TestClient(emu.app)
    headers = {"Authorization": "Bearer test", "OpenAI-Beta": "assistants=v2"}

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(client.post(f"/v1{path}", json=body, headers=headers).json())

    assistant = post("/assistants", {"model": "gpt-4o"})["id"]
    thread = post("/threads", {"messages": [{"role": "user", "content": "hi"}]})["id"]
    run = post(f"/threads/{thread}/runs", {"assistant_id": assistant})["id"]
    client.get(f"/v1/threads/{thread}/runs/{run}", headers=headers)
    message = client.get(f"/v1/threads/{thread}/messages", headers=headers).json()["data"][0]["id"]
    steps = client.get(f"/v1/threads/{thread}/runs/{run}/steps", headers=headers).json()["data"]
    ids = {"assistant_id": [assistant], "thread_id": [thread], "run_id": [run],
           "message_id": [message], "step_id": [s["id"] for s in steps]}  # fmt: skip
    document = copy.deepcopy(load_openapi(OPENAI_OPENAPI))
    for patch in OPENAI_LIVE_API_PATCHES:  # first_id/last_id are null on empty lists, as live
        patch(document)
    report = fuzz(
        "openai_assistants",
        document,
        emu.app,
        examples=10,
        real_ids=lambda: ids,
        headers=headers,
        # negative cases take minutes per operation to generate on this document
        modes=(GenerationMode.POSITIVE,),
    )
    _assert_clean(report)
    assert report.operations == 23
