"""Linkage-style workflow runs with an event log (seed 002); see :mod:`.client`.

Registers the ``workflow_runs`` backend (credentials block ``WorkflowRunsCredentials``).
"""

from __future__ import annotations

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
    "parse_linkage_error",
]

SPEC = register(
    BackendSpec(
        name="workflow_runs",
        client=WorkflowRunsClient,
        credentials_block="WorkflowRunsCredentials",
        block_type_name="Workflow Runs Credentials",
        description="Linkage-style workflow runs (/api/v1/runs) with an event log.",
        secret_field="api_key",
    )
)
"""The ``workflow_runs`` backend, as registered."""
