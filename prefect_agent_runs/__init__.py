"""prefect-agent-runs: Prefect 3 tasks and flows for agent, assistant and workflow runs."""

from __future__ import annotations

from prefect_agent_runs._version import __version__
from prefect_agent_runs.blocks import (
    AgentRun,
    AgentRunJob,
    AgentRunsCredentials,
    AssistantsCredentials,
    LangGraphCredentials,
    ProjectThreadsCredentials,
    WorkflowRunsCredentials,
)
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
    "AgentRun",
    "AgentRunJob",
    "AgentRunsCredentials",
    "AssistantsCredentials",
    "BatchResult",
    "LangGraphCredentials",
    "PollPolicy",
    "ProjectThreadsCredentials",
    "Run",
    "RunOutcome",
    "RunRequest",
    "RunStatus",
    "ThreadResult",
    "WorkflowRunsCredentials",
    "__version__",
]
