"""Prefect blocks: credentials per backend, and ``AgentRunJob`` (a saved run to trigger)."""

from __future__ import annotations

from prefect_agent_runs.blocks.credentials import (
    AgentRunsCredentials,
    AssistantsCredentials,
    LangGraphCredentials,
    ProjectThreadsCredentials,
    WorkflowRunsCredentials,
)
from prefect_agent_runs.blocks.job import AgentRun, AgentRunJob

__all__ = [
    "AgentRun",
    "AgentRunJob",
    "AgentRunsCredentials",
    "AssistantsCredentials",
    "LangGraphCredentials",
    "ProjectThreadsCredentials",
    "WorkflowRunsCredentials",
]
