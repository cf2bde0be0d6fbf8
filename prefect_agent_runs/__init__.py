"""prefect-agent-runs: Prefect 3 tasks and flows for agent, assistant and workflow runs."""

from __future__ import annotations

from prefect_agent_runs._version import __version__
from prefect_agent_runs.models import (
    BatchResult,
    Run,
    RunOutcome,
    RunRequest,
    RunStatus,
    ThreadResult,
)
from prefect_agent_runs.waiting import PollPolicy

__all__ = [
    "BatchResult",
    "PollPolicy",
    "Run",
    "RunOutcome",
    "RunRequest",
    "RunStatus",
    "ThreadResult",
    "__version__",
]
