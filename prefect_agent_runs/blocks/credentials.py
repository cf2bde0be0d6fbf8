"""Credentials blocks, one per backend: where the API is and the secret that opens it.

Every block has the same shape: ``base_url``, a ``SecretStr`` secret, request timeout,
transport retries and concurrency, and ``get_client()`` that builds the backend's
``RunsClient``. Secrets never appear in a repr, a log line or an error.
"""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, HttpUrl, SecretStr

from prefect_agent_runs.backends.base import BaseRunsClient
from prefect_agent_runs.errors import NotSupported

__all__ = [
    "AgentRunsCredentials",
    "AssistantsCredentials",
    "LangGraphCredentials",
    "ProjectThreadsCredentials",
    "WorkflowRunsCredentials",
]

_LOGO = "https://images.ctfassets.net/gm98wzqotmnx/08yCE6xpJMX9Kjl5VArDS/c2ede674c20f90b9b6edeab71feffac9/prefect-logo-mark-solid-white-500.png?h=250"
_DOCS = "https://github.com/prefect-agent-runs/prefect-agent-runs#readme"


class AgentRunsCredentials(CredentialsBlock):
    """Fields and behaviour shared by the credentials blocks of every backend."""

    _documentation_url: ClassVar[HttpUrl | None] = HttpUrl(_DOCS)
    _logo_url: ClassVar[HttpUrl | None] = HttpUrl(_LOGO)
    backend: ClassVar[str] = ""

    base_url: str = Field(default="", description="The API root of the backend.")
    request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Timeout of one HTTP request, in seconds."
    )
    max_retries: int = Field(
        default=3, ge=0, le=20, description="Transport retries of a failed idempotent request."
    )
    max_concurrency: int = Field(
        default=32, ge=1, le=1024, description="Requests in flight at once through one client."
    )
    global_concurrency_limit: str | None = Field(
        default=None,
        title="Global concurrency limit",
        description="Name of a Prefect global concurrency limit: each request to the platform "
        "holds one slot while in flight, across every flow run.",
    )
    global_rate_limit: str | None = Field(
        default=None,
        title="Global rate limit",
        description="Name of a Prefect global concurrency limit with slot decay: each request "
        "to the platform takes one slot (requests per unit of time, across every flow run).",
    )

    def _with_limits(self, client: BaseRunsClient) -> BaseRunsClient:
        """Give the client's transport the block's global limits (docs: rate limits)."""
        from prefect_agent_runs.blocks.limits import global_limiter

        limiter = global_limiter(
            concurrency_limit=self.global_concurrency_limit, rate_limit=self.global_rate_limit
        )
        if limiter is not None:
            client.transport.limiter = limiter
        return client

    def _client_kwargs(self, overrides: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "request_timeout_seconds": self.request_timeout_seconds,
            "max_retries": self.max_retries,
            "max_concurrency": self.max_concurrency,
        }
        kwargs.update(overrides)
        return kwargs

    def get_client(self, **overrides: Any) -> BaseRunsClient:
        """Build the backend's async client (close it with ``await client.aclose()``).

        Args:
            **overrides: Client arguments that replace the block's (``max_concurrency``,
                ``policy``, ``http_client``...).
        """
        raise NotSupported(
            f"{type(self).__name__}: the {self.backend or 'this'} backend is not built yet; "
            "it is planned (see the README's roadmap). Use LangGraphCredentials or "
            "AssistantsCredentials.",
            backend=self.backend or None,
        )


class LangGraphCredentials(AgentRunsCredentials):
    """Connect to a LangGraph Platform deployment or a LangGraph Agent Server.

    Attributes:
        base_url: The server's URL (what the LangGraph SDK calls ``url``).
        api_key: The LangSmith / LangGraph Platform API key, sent as ``x-api-key``;
            empty for a local ``langgraph dev`` server.

    Examples:
        Load saved credentials and start a run:
        ```python
        from prefect_agent_runs import LangGraphCredentials, RunRequest

        credentials = LangGraphCredentials.load("BLOCK_NAME")
        async with credentials.get_client() as client:
            run = await client.create_run(RunRequest(assistant_id="agent", message="hi"))
        ```
    """

    _block_type_name: ClassVar[str | None] = "LangGraph Credentials"
    _description: ClassVar[str | None] = (
        "Credentials and address of a LangGraph Platform deployment or Agent Server."
    )
    backend: ClassVar[str] = "langgraph"

    base_url: str = Field(
        default="http://127.0.0.1:8123",
        description="The LangGraph server's URL (the SDK's `url`).",
        examples=["http://127.0.0.1:8123", "https://my-deployment.us.langgraph.app"],
    )
    api_key: SecretStr | None = Field(
        default=None, description="The API key sent as `x-api-key`; empty for a local server."
    )

    def get_client(self, **overrides: Any) -> BaseRunsClient:
        """Build a :class:`~prefect_agent_runs.backends.langgraph.LangGraphClient`."""
        from prefect_agent_runs.backends.langgraph import LangGraphClient

        api_key = self.api_key.get_secret_value() if self.api_key else None
        return self._with_limits(
            LangGraphClient(self.base_url, api_key=api_key, **self._client_kwargs(overrides))
        )


class AssistantsCredentials(AgentRunsCredentials):
    """Connect to an OpenAI-compatible Assistants API v2 (Azure OpenAI, Cortex, others).

    OpenAI itself retired the Assistants API on 2026-08-26; Azure OpenAI and compatible
    servers still serve it. Set ``api_version`` for Azure (the key is then sent as
    ``api-key`` and ``api-version`` is added to every request).

    Attributes:
        base_url: API root ending in ``/v1`` (Azure: ``https://NAME.openai.azure.com/openai``).
        api_key: The API key.
        organization: OpenAI organization header, if any.
        project: OpenAI project header, if any.
        api_version: Azure OpenAI API version; setting it turns on Azure mode.
        extra_headers: Headers added to every request.

    Examples:
        ```python
        from prefect_agent_runs import AssistantsCredentials

        credentials = AssistantsCredentials.load("BLOCK_NAME")
        client = credentials.get_client()
        ```
    """

    _block_type_name: ClassVar[str | None] = "Assistants Credentials"
    _description: ClassVar[str | None] = (
        "Credentials for an OpenAI-compatible Assistants API v2 (Azure OpenAI, Cortex)."
    )
    backend: ClassVar[str] = "openai_assistants"

    base_url: str = Field(
        default="https://api.openai.com/v1",
        description="The API root; Cortex's is `http://127.0.0.1:39281/v1`.",
    )
    api_key: SecretStr | None = Field(default=None, description="The API key.")
    organization: str | None = Field(default=None, description="OpenAI organization id, if any.")
    project: str | None = Field(default=None, description="OpenAI project id, if any.")
    api_version: str | None = Field(
        default=None, description="Azure OpenAI API version; when set, Azure mode is used."
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict, description="Headers added to every request."
    )

    def get_client(self, **overrides: Any) -> BaseRunsClient:
        """Build an :class:`~prefect_agent_runs.backends.openai_assistants.AssistantsClient`."""
        from prefect_agent_runs.backends.openai_assistants import AssistantsClient

        return self._with_limits(
            AssistantsClient(
                self.base_url,
                api_key=self.api_key.get_secret_value() if self.api_key else None,
                organization=self.organization,
                project=self.project,
                api_version=self.api_version,
                headers=self.extra_headers,
                **self._client_kwargs(overrides),
            )
        )


class WorkflowRunsCredentials(AgentRunsCredentials):
    """Connect to a Linkage-style workflow-runs API (``/api/v1/runs`` with an event log).

    The backend is planned; ``get_client()`` raises ``NotSupported`` until it lands.

    Attributes:
        base_url: The API root (Linkage's ``serverURL``).
        api_key: The client secret.
        client_id: The client id (``x-client-id``).

    Examples:
        ```python
        from prefect_agent_runs import WorkflowRunsCredentials

        credentials = WorkflowRunsCredentials.load("BLOCK_NAME")
        ```
    """

    _block_type_name: ClassVar[str | None] = "Workflow Runs Credentials"
    _description: ClassVar[str | None] = (
        "Credentials for a Linkage-style workflow-runs API with an event log."
    )
    backend: ClassVar[str] = "workflow_runs"

    base_url: str = Field(default="http://localhost:3000", description="The API root.")
    api_key: SecretStr | None = Field(default=None, description="The client secret.")
    client_id: str | None = Field(default=None, description="The client id (`x-client-id`).")


class ProjectThreadsCredentials(AgentRunsCredentials):
    """Connect to a project thread-runs API (``/api/projects/{projectId}/threads/...``).

    The backend is planned; ``get_client()`` raises ``NotSupported`` until it lands.

    Attributes:
        base_url: The API root.
        token: The JWT bearer token.
        project_id: The project whose threads are used.

    Examples:
        ```python
        from prefect_agent_runs import ProjectThreadsCredentials

        credentials = ProjectThreadsCredentials.load("BLOCK_NAME")
        ```
    """

    _block_type_name: ClassVar[str | None] = "Project Threads Credentials"
    _description: ClassVar[str | None] = (
        "Credentials for a project thread-runs API authenticated with a JWT."
    )
    backend: ClassVar[str] = "project_threads"

    base_url: str = Field(default="http://localhost:5000", description="The API root.")
    token: SecretStr | None = Field(default=None, description="The JWT bearer token.")
    project_id: str | None = Field(default=None, description="The project id.")
