"""Prefect flows over many remote runs: ``run_batch``, ``create_runs``, ``wait_for_runs``.

``run_batch`` / ``create_runs`` / ``wait_for_runs`` work from sync code (they run a sync
flow) and from async code (they return the async flow's coroutine: ``await run_batch(...)``).
``arun_batch`` / ``acreate_runs`` / ``await_for_runs`` are the async flows themselves, the
ones to deploy (``arun_batch.serve(...)``).
"""

from __future__ import annotations

from prefect_agent_runs.flows._artifacts import artifact_keys
from prefect_agent_runs.flows._hooks import cancel_batch_runs, cancel_remote_runs_hook
from prefect_agent_runs.flows._ledger import BatchLedger
from prefect_agent_runs.flows.batch import (
    acreate_runs,
    arun_batch,
    await_for_runs,
    create_runs,
    create_runs_sync,
    generate_batch_key,
    prepare_requests,
    run_batch,
    run_batch_sync,
    wait_for_runs,
    wait_for_runs_sync,
)
from prefect_agent_runs.flows.progress import ProgressListener, progress_listener

__all__ = [
    "BatchLedger",
    "ProgressListener",
    "acreate_runs",
    "artifact_keys",
    "arun_batch",
    "await_for_runs",
    "cancel_batch_runs",
    "cancel_remote_runs_hook",
    "create_runs",
    "create_runs_sync",
    "generate_batch_key",
    "prepare_requests",
    "progress_listener",
    "run_batch",
    "run_batch_sync",
    "wait_for_runs",
    "wait_for_runs_sync",
]
