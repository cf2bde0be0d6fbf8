"""Linkage-style workflow runs with an event log (seed 002); see :mod:`.client`.

Registers the ``workflow_runs`` backend (credentials block ``WorkflowRunsCredentials``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from prefect_agent_runs.backends.registry import BackendSpec, register
from prefect_agent_runs.backends.workflow_runs.client import (
    DEFAULT_BASE_URL,
    STATUS_MAP,
    TERMINAL_EVENTS,
    EventsChunk,
    WorkflowRunsClient,
    parse_linkage_error,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "SPEC",
    "STATUS_MAP",
    "TERMINAL_EVENTS",
    "EventsChunk",
    "WorkflowRunsClient",
    "WorkflowRunsSettings",
    "parse_linkage_error",
]


class WorkflowRunsSettings(BaseModel):
    """Connect to a Linkage-style workflow-runs API (``/api/v1/runs`` with an event log).

    Attributes:
        base_url: The API root (Linkage's ``serverURL``).
        api_key: The client secret, sent as ``x-client-secret``.
        client_id: The client id, sent as ``x-client-id``.

    Examples:
        ```python
        from prefect_agent_runs import WorkflowRunsCredentials

        credentials = WorkflowRunsCredentials.load("BLOCK_NAME")
        async with credentials.get_client() as client:
            ...
        ```
    """

    api_key: SecretStr | None = Field(
        default=None, title="API key", description="The client secret (`x-client-secret`)."
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        title="Base URL",
        description="The API root (Linkage's `serverURL`).",
    )
    client_id: str | None = Field(default=None, description="The client id (`x-client-id`).")


SPEC = register(
    BackendSpec(
        name="workflow_runs",
        client=WorkflowRunsClient,
        credentials_block="WorkflowRunsCredentials",
        block_type_name="Workflow Runs Credentials",
        description="Linkage-style workflow runs (/api/v1/runs) with an event log.",
        settings=WorkflowRunsSettings,
        secret_field="api_key",
    )
)
"""The ``workflow_runs`` backend, as registered."""
