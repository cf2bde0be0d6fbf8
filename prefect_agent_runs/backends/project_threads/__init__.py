"""Project thread runs (seed 003, AgileMantis); see :mod:`.client`.

Registers the ``project_threads`` backend (credentials block ``ProjectThreadsCredentials``).
"""

from __future__ import annotations

from prefect_agent_runs.backends.project_threads.client import (
    INSTRUCTIONS_MAX,
    MESSAGE_MAX,
    STATUS_MAP,
    ProjectThreadsClient,
    parse_project_error,
)
from prefect_agent_runs.backends.registry import BackendSpec, register

__all__ = [
    "INSTRUCTIONS_MAX",
    "MESSAGE_MAX",
    "SPEC",
    "STATUS_MAP",
    "ProjectThreadsClient",
    "parse_project_error",
]

SPEC = register(
    BackendSpec(
        name="project_threads",
        client=ProjectThreadsClient,
        credentials_block="ProjectThreadsCredentials",
        block_type_name="Project Threads Credentials",
        description="Project thread runs (/api/projects/{projectId}/threads/{threadId}/runs).",
        secret_field="token",
    )
)
"""The ``project_threads`` backend, as registered."""
