"""The table artifact of a large batch is written in pages whose Prefect events fit.

Prefect's server (3.9) copies a keyed artifact's data into an ``artifact-collection`` event
and refuses an event over ``PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES`` (1.5 MB), with a
WARNING in its log. A 10,000-item batch's single table made a 2.1 MB event ("Refusing to
publish event of size 2098293" in a benchmark's Prefect server log): its event was lost.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.server.events.schemas.lifecycle import artifact_collection_created_event
from prefect.settings import get_current_settings

from prefect_agent_runs import AssistantsCredentials
from prefect_agent_runs.flows import _artifacts, artifact_keys, run_batch
from prefect_agent_runs.flows._artifacts import table_keys, table_pages
from prefect_agent_runs.models import BatchResult, Run, RunOutcome, RunStatus, ThreadResult
from prefect_agent_runs.testing import AssistantsEmulator

from .test_run_batch import read_artifacts


def outcome(i: int) -> RunOutcome:
    """An item as large as a real one: uuid ids, an 80-character reply, a quoted error."""
    run = Run(
        id=f"run_{uuid.uuid4().hex}",
        thread_id=f"thread_{uuid.uuid4().hex}",
        status=RunStatus.FAILED if i % 10 == 0 else RunStatus.COMPLETED,
        raw_status="failed" if i % 10 == 0 else "completed",
        backend="openai",
    )
    if i % 10 == 0:
        error = f'assistants: run {run.id} failed: server_error: "tool" said {{"code": 500}} ' * 3
        return RunOutcome(key=f"item-{i}", status=RunStatus.FAILED, run=run, error=error)
    reply = ThreadResult(run_id=run.id, text=f'echo: "question {i}" ' + "x" * 80)
    return RunOutcome(
        key=f"item-{i}", status=RunStatus.COMPLETED, run=run, result=reply, seconds_running=1.5
    )


def event_size(key: str, data: str) -> int:
    """Bytes of the event Prefect's server builds for a keyed artifact of ``data``."""
    collection = SimpleNamespace(
        id=uuid.uuid4(),
        key=key,
        type="table",
        data=data,
        description="Runs of batch `b`. Rows 1-9,999 of 99,999 (page 1 of 99); continued in `x`.",
        latest_id=uuid.uuid4(),
        flow_run_id=uuid.uuid4(),
        task_run_id=uuid.uuid4(),
    )
    event = artifact_collection_created_event(collection, datetime.now(timezone.utc))  # type: ignore[arg-type]
    return len(event.model_dump_json().encode())


def test_a_10000_item_table_is_split_into_pages_whose_events_fit() -> None:
    result = BatchResult(batch_key="b", outcomes=[outcome(i) for i in range(10_000)])
    rows = _artifacts.table_rows(result)
    limit = get_current_settings().server.events.maximum_size_bytes
    whole = json.dumps(rows, ensure_ascii=False)
    assert event_size("b-runs", whole) > limit  # the reason: one table's event is refused

    pages = table_pages(rows)
    assert len(pages) >= 2
    assert [row for _, page in pages for row in json.loads(page)] == rows  # all, in order
    assert [count for count, _ in pages] == [len(json.loads(page)) for _, page in pages]
    keys = table_keys("b", len(pages))
    assert keys[0] == artifact_keys("b")["table"] and keys[1] == "b-runs-2"
    sizes = [event_size(key, page) for key, (_, page) in zip(keys, pages, strict=True)]
    assert max(sizes) <= limit, sizes


def test_one_row_longer_than_a_page_is_a_page_of_its_own() -> None:
    rows: list[dict[str, Any]] = [{"key": "a", "reply": "x" * 50}, {"key": "b"}, {"key": "c"}]
    pages = table_pages(rows, budget=40)
    assert [json.loads(page) for _, page in pages] == [[rows[0]], [rows[1], rows[2]]]
    assert table_pages([], budget=40) == [(0, "[]")]


@pytest.mark.usefixtures("prefect_harness")
async def test_a_batch_s_table_pages_are_its_flow_run_s_artifacts_in_order(
    emulator: AssistantsEmulator, batch_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 items with pages of 2,000 bytes: every row once, in order, across the pages; each
    page says where it goes on; the summary names them all."""
    monkeypatch.setattr(_artifacts, "TABLE_PAGE_BYTES", 2_000)
    creds = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test")
    requests = [
        {"key": f"item-{i}", "assistant_id": "asst_echo", "message": f"q{i}"} for i in range(30)
    ]
    result = await run_batch(creds, requests, batch_key=batch_key)
    assert len(result.completed) == 30

    table = artifact_keys(batch_key)["table"]
    keys = [table] + [f"{table}-{page}" for page in range(2, 30)]
    found = {a["key"]: a for a in read_artifacts([*keys, artifact_keys(batch_key)["summary"]])}
    pages = [found[key] for key in keys if key in found]
    assert len(pages) >= 3, sorted(found)
    assert [key for key in keys if key in found] == keys[: len(pages)]  # no gap
    rows = [row for page in pages for row in json.loads(page["data"])]
    assert [row["key"] for row in rows] == [f"item-{i}" for i in range(30)]
    assert all(row["reply"] == f"echo: q{i}" for i, row in enumerate(rows))
    assert all(len(json.dumps(page["data"])) <= 2_000 for page in pages)
    assert all(page["flow_run_id"] == pages[0]["flow_run_id"] is not None for page in pages)
    assert f"continued in `{keys[1]}`" in pages[0]["description"]
    assert f"of 30 (page {len(pages)} of {len(pages)})." in pages[-1]["description"]
    summary = str(found[artifact_keys(batch_key)["summary"]]["data"])
    assert f"The table of runs is in {len(pages)} artifacts" in summary
    assert all(f"`{key}`" in summary for key in keys[: len(pages)])
