"""Prefect tasks: one remote operation each, as an async ``aNAME`` task and a dispatching ``NAME``.

See :mod:`prefect_agent_runs.tasks.runs` for the dispatch rules, and why no task has
Prefect retries or a cache.
"""

from __future__ import annotations

from prefect_agent_runs.tasks.runs import (
    acancel_run,
    acreate_run,
    adelete_run,
    aget_run,
    aget_run_result,
    alist_runs,
    astream_run_events,
    await_for_run,
    cancel_run,
    create_run,
    delete_run,
    get_run,
    get_run_result,
    list_runs,
    stream_run_events,
    wait_for_run,
)

__all__ = [
    "acancel_run",
    "acreate_run",
    "adelete_run",
    "aget_run",
    "aget_run_result",
    "alist_runs",
    "astream_run_events",
    "await_for_run",
    "cancel_run",
    "create_run",
    "delete_run",
    "get_run",
    "get_run_result",
    "list_runs",
    "stream_run_events",
    "wait_for_run",
]
