"""OpenAI-compatible Assistants API v2 threads and runs (seed 000); see :mod:`.client`."""

from __future__ import annotations

from prefect_agent_runs.backends.openai_assistants.client import (
    CREATE_ID_KEY,
    DEFAULT_BASE_URL,
    RETIRED_MESSAGE,
    AssistantsClient,
    active_run_id,
    message_text,
    tool_calls,
)

__all__ = [
    "CREATE_ID_KEY",
    "DEFAULT_BASE_URL",
    "RETIRED_MESSAGE",
    "AssistantsClient",
    "active_run_id",
    "message_text",
    "tool_calls",
]
