"""One module per wire protocol. No Prefect imports here: a backend is a plain async client."""

from __future__ import annotations

from prefect_agent_runs.backends.base import BaseRunsClient, Capability, Page, RunEvent, RunsClient
from prefect_agent_runs.backends.langgraph import LangGraphClient
from prefect_agent_runs.backends.openai_assistants import AssistantsClient

__all__ = [
    "AssistantsClient",
    "BaseRunsClient",
    "Capability",
    "LangGraphClient",
    "Page",
    "RunEvent",
    "RunsClient",
]
