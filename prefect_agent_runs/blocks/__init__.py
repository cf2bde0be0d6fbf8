"""Prefect blocks: credentials per backend, and ``AgentRunJob`` (a saved run to trigger).

:func:`credentials_class` gives any registered backend's credentials block; a block
built from a backend's settings is also importable from here by its name.
"""

from __future__ import annotations

from typing import Any

from prefect_agent_runs.blocks.credentials import (
    AgentRunsCredentials,
    AssistantsCredentials,
    LangGraphCredentials,
    ProjectThreadsCredentials,
    WorkflowRunsCredentials,
    credentials_class,
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
    "credentials_class",
]


def __getattr__(name: str) -> Any:
    """``from prefect_agent_runs.blocks import XCredentials`` for a registered backend's block."""
    from prefect_agent_runs.backends import registry

    for spec in registry.specs():
        if spec.credentials_block == name:
            return credentials_class(spec.name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
