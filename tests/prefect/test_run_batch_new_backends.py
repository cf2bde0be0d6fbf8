"""run_batch over the workflow_runs and project_threads backends: 200 items, checked one by one."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from prefect_agent_runs import (
    ProjectThreadsCredentials,
    RunRequest,
    RunStatus,
    WorkflowRunsCredentials,
)
from prefect_agent_runs.flows import run_batch
from prefect_agent_runs.models import METADATA_BATCH_KEY, METADATA_ITEM_KEY
from prefect_agent_runs.testing import ProjectThreadsEmulator, WorkflowRunsEmulator
from prefect_agent_runs.testing.contracts import (
    check_project_threads_traffic,
    check_workflow_runs_traffic,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def test_run_batch_200_items_on_workflow_runs(batch_key: str) -> None:
    with WorkflowRunsEmulator(run_seconds=0.05, progress_events=1) as emu:
        credentials = WorkflowRunsCredentials(base_url=emu.base_url, api_key="k", client_id="c")
        items = []
        for i in range(200):
            meta = {"emulator": json.dumps({"outcome": "failed"})} if i % 10 == 0 else {}
            items.append(RunRequest(key=f"item-{i}", assistant_id="wf", message=f"q{i}",
                                    metadata=meta))  # fmt: skip
        result = await run_batch(credentials, items, batch_key=batch_key, max_concurrency=32)
        assert len(result.outcomes) == 200
        for i, outcome in enumerate(result.outcomes):
            assert outcome.key == f"item-{i}"
            if i % 10 == 0:
                assert outcome.status is RunStatus.FAILED and outcome.error, outcome
            else:
                assert outcome.ok, outcome
                assert outcome.result is not None and outcome.result.text == f"echo: q{i}"
        assert result.counts == {"completed": 180, "failed": 20}
        runs = [r for r in emu.runs() if r["metadata"].get(METADATA_BATCH_KEY) == batch_key]
        assert len(runs) == 200
        assert Counter(r["metadata"][METADATA_ITEM_KEY] for r in runs).most_common(1)[0][1] == 1
    check_workflow_runs_traffic(emu)


async def test_run_batch_200_items_on_project_threads(batch_key: str) -> None:
    with ProjectThreadsEmulator(run_seconds=0.05, token="jwt") as emu:
        credentials = ProjectThreadsCredentials(base_url=emu.base_url, token="jwt",
                                                project_id=emu.project_id)  # fmt: skip
        threads = [emu.create_thread() for _ in range(200)]
        items = []
        for i, thread in enumerate(threads):
            instructions = 'emulator: {"outcome": "expired"}' if i % 10 == 0 else None
            items.append(RunRequest(key=f"item-{i}", assistant_id="project", thread_id=thread,
                                    message=f"q{i}", instructions=instructions))  # fmt: skip
        result = await run_batch(credentials, items, batch_key=batch_key, max_concurrency=32)
        assert len(result.outcomes) == 200
        for i, outcome in enumerate(result.outcomes):
            assert outcome.key == f"item-{i}"
            assert outcome.run is not None and outcome.run.thread_id == threads[i]
            if i % 10 == 0:
                assert outcome.status is RunStatus.EXPIRED and outcome.error, outcome
            else:
                assert outcome.ok, outcome
                assert outcome.result is not None and outcome.result.text == f"echo: q{i}"
        assert result.counts == {"completed": 180, "expired": 20}
        assert len(emu.runs()) == 200
    check_project_threads_traffic(emu)
