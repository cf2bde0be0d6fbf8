"""OpenAI-compatible Assistants API v2 threads and runs (seed 000); see :mod:`.client`.

Registers the ``openai_assistants`` backend (credentials block ``AssistantsCredentials``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from prefect_agent_runs.backends.openai_assistants.client import (
    CREATE_ID_KEY,
    DEFAULT_BASE_URL,
    RETIRED_MESSAGE,
    STATUS_MAP,
    AssistantsClient,
    active_run_id,
    message_text,
    tool_calls,
)
from prefect_agent_runs.backends.registry import BackendSpec, Demo, register

__all__ = [
    "CREATE_ID_KEY",
    "DEFAULT_BASE_URL",
    "RETIRED_MESSAGE",
    "SPEC",
    "STATUS_MAP",
    "AssistantsClient",
    "active_run_id",
    "message_text",
    "tool_calls",
]


def _make_client(values: Mapping[str, Any], **overrides: Any) -> AssistantsClient:
    """The client from ``AssistantsCredentials``' values (``extra_headers`` -> ``headers``)."""
    arguments = dict(values)
    arguments["headers"] = arguments.pop("extra_headers", None) or {}
    arguments.update(overrides)
    return AssistantsClient(**arguments)


def _demo(items: int) -> AbstractContextManager[Demo]:
    from prefect_agent_runs.testing.assistants import demo

    return demo(items)


SPEC = register(
    BackendSpec(
        name="openai_assistants",
        client=AssistantsClient,
        credentials_block="AssistantsCredentials",
        block_type_name="Assistants Credentials",
        description="OpenAI-compatible Assistants API v2 (Azure OpenAI, Cortex and others).",
        secret_field="api_key",
        make_client=_make_client,
        demo=_demo,
        cli_options={"api_version": "api_version"},
    )
)
"""The ``openai_assistants`` backend, as registered."""
