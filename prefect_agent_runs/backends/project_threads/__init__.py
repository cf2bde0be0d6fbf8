"""Project thread runs (seed 003, AgileMantis); see :mod:`.client`.

Registers the ``project_threads`` backend (credentials block ``ProjectThreadsCredentials``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

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
    "ProjectThreadsSettings",
    "parse_project_error",
]


class ProjectThreadsSettings(BaseModel):
    """Connect to a project thread-runs API (``/api/projects/{projectId}/threads/...``).

    Attributes:
        token: The JWT, sent as ``Authorization: Bearer``.
        base_url: The API root (paths start with ``/api``).
        project_id: The project whose threads are used.
        team_id: The project's team, for the ``/api/teams/{teamId}/projects/...`` paths.

    Examples:
        ```python
        from prefect_agent_runs import ProjectThreadsCredentials

        credentials = ProjectThreadsCredentials.load("BLOCK_NAME")
        async with credentials.get_client() as client:
            ...
        ```
    """

    token: SecretStr | None = Field(default=None, description="The JWT bearer token.")
    base_url: str = Field(
        default="http://localhost:5000", title="Base URL", description="The API root."
    )
    project_id: str | None = Field(default=None, description="The project id.")
    team_id: str | None = Field(
        default=None, description="The team id, for the `/api/teams/{teamId}/projects/...` paths."
    )


SPEC = register(
    BackendSpec(
        name="project_threads",
        client=ProjectThreadsClient,
        credentials_block="ProjectThreadsCredentials",
        block_type_name="Project Threads Credentials",
        description="Project thread runs (/api/projects/{projectId}/threads/{threadId}/runs).",
        settings=ProjectThreadsSettings,
        secret_field="token",
    )
)
"""The ``project_threads`` backend, as registered."""
