"""Prefect events of remote runs, read back from a real Prefect server: every state change
(``events="changes"``) and the default, one per item that did not complete."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from prefect_agent_runs.flows.events import batch_resource_id, run_resource_id
from prefect_agent_runs.models import METADATA_BATCH_KEY, METADATA_ITEM_KEY
from prefect_agent_runs.testing import AssistantsEmulator
from prefect_agent_runs.testing.prefect_server import PrefectServer

from .conftest import start_batch


@pytest.fixture
def emulator() -> Iterator[AssistantsEmulator]:
    with AssistantsEmulator(run_seconds=0.05, poll_after_ms=20, compress_streams=False) as emu:
        yield emu


def read_events(
    server: PrefectServer,
    batch_key: str,
    items: int,
    ends: tuple[str, ...] = (".completed", ".failed"),
) -> list[dict[str, Any]]:
    """The batch's run events (by related resource), once ``items`` events ending in one of
    ``ends`` and the script's sentinel ``test.batch.done`` (emitted after the batch) are
    stored."""
    body = {
        "filter": {
            "event": {"prefix": ["prefect-agent-runs.run.", "test.batch.done"]},
            "related": {"id": [batch_resource_id(batch_key)]},
            "order": "ASC",
        },
        "limit": 50,  # the server's page size
    }
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 90  # the server persists events in batches
    with httpx.Client(base_url=server.api_url, timeout=30) as http:
        while time.monotonic() < deadline:
            response = http.post("/events/filter", json=body)
            response.raise_for_status()
            page = response.json()
            events = page["events"]
            while page.get("next_page"):
                response = http.get(page["next_page"])
                response.raise_for_status()
                page = response.json()
                events += page["events"]
            if sum(e["event"].endswith(ends) for e in events) >= items and any(
                e["event"] == "test.batch.done" for e in events
            ):
                return [e for e in events if e["event"] != "test.batch.done"]
            time.sleep(1)
    raise AssertionError(f"{len(events)} events stored: {[e['event'] for e in events]}")


def flow_run_of(server: PrefectServer, event: dict[str, Any]) -> dict[str, Any]:
    (flow_run,) = [r for r in event["related"] if r["prefect.resource.role"] == "flow-run"]
    flow_run_id = flow_run["prefect.resource.id"].removeprefix("prefect.flow-run.")
    response = httpx.get(f"{server.api_url}/flow_runs/{flow_run_id}", timeout=30)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def test_every_state_change_is_an_event_with_the_run_and_the_batch(
    prefect_server: PrefectServer, emulator: AssistantsEmulator
) -> None:
    batch_key = f"events-{uuid.uuid4().hex[:8]}"
    # 12 items: 0, 4, 8 fail at once; the others complete after 2 s
    process = start_batch(
        prefect_server, emulator.base_url, batch_key, "12", "4", "2", events="changes"
    )
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert json.loads(output.strip().splitlines()[-1])["counts"] == {"completed": 9, "failed": 3}

    runs = {
        r["metadata"][METADATA_ITEM_KEY]: r
        for r in emulator.runs()
        if r["metadata"].get(METADATA_BATCH_KEY) == batch_key
    }
    assert len(runs) == 12
    events = read_events(prefect_server, batch_key, items=12)
    by_key: dict[str, list[str]] = defaultdict(list)
    for event in events:
        resource = event["resource"]
        key = resource["prefect-agent-runs.key"]
        run = runs[key]
        assert resource["prefect.resource.id"] == run_resource_id("openai_assistants", run["id"])
        assert resource["prefect-agent-runs.thread-id"] == run["thread_id"]
        assert resource["prefect-agent-runs.backend"] == "openai_assistants"
        roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]}
        assert roles["batch"] == batch_resource_id(batch_key)
        assert roles["flow-run"].startswith("prefect.flow-run.")  # added by Prefect
        assert event["payload"]["key"] == key and event["payload"]["run_id"] == run["id"]
        by_key[key].append(event["event"].removeprefix("prefect-agent-runs.run."))

    # one event per status each item was seen in: created (queued), running, its end
    for i in range(12):
        seen = by_key[f"item-{i}"]
        if i % 4 == 0:  # failed 0.05 s after it started: maybe never seen running
            assert seen in (["queued", "failed"], ["queued", "running", "failed"]), (i, seen)
        else:
            # running for 2 s: seen running unless every poll of those 2 s came late
            assert seen in (["queued", "running", "completed"], ["queued", "completed"]), (i, seen)

    failed = [e for e in events if e["event"] == "prefect-agent-runs.run.failed"]
    assert len(failed) == 3
    for event in failed:
        assert "scripted to fail" in event["payload"]["error"]
        assert event["payload"]["raw_status"] == "failed"
    assert "sk-test" not in json.dumps(events)

    # the failures were known while the batch still ran (an Automation could react)
    flow_run = flow_run_of(prefect_server, failed[0])
    ended = datetime.fromisoformat(flow_run["end_time"])
    for event in failed:
        assert (ended - datetime.fromisoformat(event["occurred"])).total_seconds() > 1.0


def test_by_default_only_items_that_did_not_complete_are_events(
    prefect_server: PrefectServer, emulator: AssistantsEmulator
) -> None:
    batch_key = f"events-{uuid.uuid4().hex[:8]}"
    # 12 items: 0, 4, 8 fail at once; the others complete after 0.5 s; the default level
    process = start_batch(prefect_server, emulator.base_url, batch_key, "12", "4", "0.5")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert json.loads(output.strip().splitlines()[-1])["counts"] == {"completed": 9, "failed": 3}

    events = read_events(prefect_server, batch_key, items=3, ends=(".failed",))
    # read once the script's sentinel, emitted after the batch, is stored: any completion
    # or running event the batch had emitted would be stored too
    assert sorted(e["event"] for e in events) == ["prefect-agent-runs.run.failed"] * 3
    assert sorted(e["payload"]["key"] for e in events) == ["item-0", "item-4", "item-8"]
    assert all("scripted to fail" in e["payload"]["error"] for e in events)
