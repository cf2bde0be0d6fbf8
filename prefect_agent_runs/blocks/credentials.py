"""Credentials blocks, one per backend: where the API is and the secret that opens it.

Every block has the same shape: ``base_url``, a ``SecretStr`` secret, request timeout,
transport retries and concurrency, and ``get_client()`` that builds the backend's
``RunsClient`` through the backend registry. Secrets never appear in a repr, a log line
or an error.

A backend's block is found with :func:`credentials_class`: the block class written
here for it, or else one built from the backend's ``settings`` model (backends declare
their credentials as plain pydantic models, so that they never import Prefect).
"""

from __future__ import annotations

import threading
from abc import ABC
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar

from prefect.blocks.abstract import CredentialsBlock
from prefect.blocks.core import InvalidBlockRegistration
from prefect.blocks.core import schema_extra as _prefect_schema_extra
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr

from prefect_agent_runs.backends import registry
from prefect_agent_runs.backends.base import BaseRunsClient
from prefect_agent_runs.errors import NotSupported
from prefect_agent_runs.transient import TRANSIENT_TOLERANCE

__all__ = [
    "AgentRunsCredentials",
    "AssistantsCredentials",
    "LangGraphCredentials",
    "ProjectThreadsCredentials",
    "WorkflowRunsCredentials",
    "credentials_class",
    "credentials_classes",
]

_DOCS = "https://github.com/prefect-agent-runs/prefect-agent-runs#readme"
_LOGOS = "https://raw.githubusercontent.com/prefect-agent-runs/prefect-agent-runs/main/prefect_agent_runs/blocks/logos"
"""Where the block logos shipped in the package (``blocks/logos/*.svg``) are published."""


def logo_url(name: str) -> HttpUrl:
    """The published URL of ``prefect_agent_runs/blocks/logos/<name>.svg``."""
    return HttpUrl(f"{_LOGOS}/{name}.svg")


def _has_logo(name: str) -> bool:
    from pathlib import Path

    return (Path(__file__).parent / "logos" / f"{name}.svg").is_file()


_TITLES = {
    "api_key": "API key",
    "token": "Token",
    "base_url": "Base URL",
    "api_version": "API version",
    "client_id": "Client ID",
    "project_id": "Project ID",
    "extra_headers": "Extra headers",
    "request_timeout_seconds": "Request timeout (seconds)",
    "max_retries": "Max retries",
    "max_concurrency": "Max concurrency",
}
_LIMIT_FIELDS = ("global_concurrency_limit", "global_rate_limit")


def _credentials_schema_extra(schema: dict[str, Any], model: type[Any]) -> None:
    """Prefect's block schema, with readable titles and the secrets first, then ``base_url``
    (the UI shows the fields in this order)."""
    _prefect_schema_extra(schema, model)
    properties: dict[str, Any] = schema.get("properties", {})
    for name, prop in properties.items():
        if name in _TITLES:
            prop["title"] = _TITLES[name]
    secrets = [n for n in properties if n in set(schema.get("secret_fields", []))]
    first = [*secrets, *(["base_url"] if "base_url" in properties else [])]
    schema["properties"] = {
        **{n: properties[n] for n in first},
        **{n: p for n, p in properties.items() if n not in first},
    }


_nested_registration: ContextVar[bool] = ContextVar("_nested_registration", default=False)
"""Set while a block that holds credentials (``AgentRunJob``) registers its nested types."""


@contextmanager
def registering_nested_credentials() -> Iterator[None]:
    """While a block typed with :class:`AgentRunsCredentials` registers: the shared base is
    skipped (the holder registers every concrete credentials block itself)."""
    token = _nested_registration.set(True)
    try:
        yield
    finally:
        _nested_registration.reset(token)


class AgentRunsCredentials(CredentialsBlock, ABC):
    """Fields and behaviour shared by the credentials blocks of every backend.

    An interface, not a block type: the Blocks catalog does not offer it (``ABC`` among its
    bases keeps it out of Prefect's block registry, and registering it directly raises
    ``InvalidBlockRegistration``). ``AgentRunJob.credentials`` is typed with it (any
    backend's block); the job's block schema offers each concrete block instead. A
    backend's own block is registered only once the backend is built: see
    :meth:`register_type_and_schema`.
    """

    model_config = ConfigDict(json_schema_extra=_credentials_schema_extra)

    _documentation_url: ClassVar[HttpUrl | None] = HttpUrl(_DOCS)
    _logo_url: ClassVar[HttpUrl | None] = None
    backend: ClassVar[str] = ""

    base_url: str = Field(default="", description="The API root of the backend.")
    request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Timeout of one HTTP request, in seconds."
    )
    max_retries: int = Field(
        default=TRANSIENT_TOLERANCE,
        ge=0,
        le=20,
        description="Transport retries of a failed idempotent request (the wait loop tolerates as many).",
    )
    max_concurrency: int = Field(
        default=32, ge=1, le=1024, description="Requests in flight at once through one client."
    )
    verify_tls: bool = Field(
        default=True,
        description="Verify the server's TLS certificate. Turn off only for a test server: "
        "it is logged as a warning.",
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

    @classmethod
    def _check_built(cls) -> None:
        if cls.backend and cls.backend not in registry.names():
            raise InvalidBlockRegistration(
                f"{cls.__name__}: the {cls.backend} backend is not built; its block type "
                "is not offered"
            )

    @classmethod
    def register_type_and_schema(cls, client: Any = None, **kwargs: Any) -> Any:
        """Register the block type with Prefect, once its backend is built.

        Raises:
            InvalidBlockRegistration: The backend is not registered (not built yet), so the
                block would not work: ``prefect block register`` skips it. Also for the
                shared base itself, which is no block type.
        """
        if ABC in cls.__bases__ and _nested_registration.get():
            return None  # the holder (AgentRunJob) registers the concrete blocks
        cls._check_built()
        if client is not None:
            kwargs["client"] = client
        return super().register_type_and_schema(**kwargs)  # _sync: Prefect's dispatch

    @classmethod
    async def aregister_type_and_schema(cls, client: Any = None) -> None:
        """The async twin of :meth:`register_type_and_schema`.

        Raises:
            InvalidBlockRegistration: The backend is not registered (not built yet), or
                this is the shared base.
        """
        if ABC in cls.__bases__ and _nested_registration.get():
            return
        cls._check_built()
        kwargs = {"client": client} if client is not None else {}
        await super().aregister_type_and_schema(**kwargs)

    def client_values(self) -> dict[str, Any]:
        """The block's fields as the backend's client takes them (secrets unwrapped).

        Returns:
            Every field's value; a ``SecretStr`` becomes its plain string.
        """
        values: dict[str, Any] = {}
        for name in type(self).model_fields:
            if name in _LIMIT_FIELDS:  # taken by the transport's limiter, not the client
                continue
            value = getattr(self, name)
            values[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        if values.get("verify_tls") is True:
            del values["verify_tls"]  # the default: clients that lack the option still build
        return values

    def get_client(self, **overrides: Any) -> BaseRunsClient:
        """Build the backend's async client (close it with ``await client.aclose()``).

        Args:
            **overrides: Client arguments that replace the block's (``max_concurrency``,
                ``policy``, ``http_client``...).

        Raises:
            NotSupported: The backend is not built (not registered).
        """
        try:
            spec = registry.get(self.backend)
        except NotSupported:
            raise NotSupported(
                f"{type(self).__name__}: the {self.backend or 'this'} backend is not built "
                "(no backend package registers it); registered backends: "
                f"{', '.join(registry.names())}.",
                backend=self.backend or None,
            ) from None
        client = spec.build_client(self.client_values(), **overrides)
        from prefect_agent_runs.blocks.limits import global_limiter

        limiter = global_limiter(
            concurrency_limit=self.global_concurrency_limit, rate_limit=self.global_rate_limit
        )
        if limiter is not None:  # docs: "Rate limits across flow runs"
            client.transport.limiter = limiter
        return client


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
    _logo_url: ClassVar[HttpUrl | None] = logo_url("langgraph")
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
    _logo_url: ClassVar[HttpUrl | None] = logo_url("openai_assistants")
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


_generated: dict[str, type[AgentRunsCredentials]] = {}
_generated_lock = threading.Lock()


def _written_for(backend: str) -> type[AgentRunsCredentials] | None:
    """The block class written (not generated) for ``backend``, if any."""
    pending: list[type[AgentRunsCredentials]] = [AgentRunsCredentials]
    while pending:
        cls = pending.pop()
        if cls.backend == backend and cls not in _generated.values():
            return cls
        pending.extend(cls.__subclasses__())
    return None


def credentials_class(backend: str) -> type[AgentRunsCredentials]:
    """The credentials block class of a registered backend.

    The class written for it (``LangGraphCredentials``...) when there is one; otherwise a
    block built once from the backend's ``settings`` model, named after its
    ``credentials_block`` (and registered with Prefect like any block).

    Args:
        backend: The backend's name.

    Raises:
        NotSupported: No such backend, or it declares no ``settings``.
    """
    written = _written_for(backend)
    if written is not None:
        return written
    spec = registry.get(backend)
    with _generated_lock:
        cls = _generated.get(backend)
        if cls is None:
            cls = _build_block(spec)
            _generated[backend] = cls
    return cls


def _build_block(spec: registry.BackendSpec) -> type[AgentRunsCredentials]:
    settings: type[BaseModel] | None = spec.settings
    if settings is None:
        raise NotSupported(
            f"{spec.name}: the backend declares no credentials settings, so it has no "
            "credentials block",
            backend=spec.name,
        )
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": spec.credentials_block,
        "__doc__": settings.__doc__ or f"Credentials of the {spec.name} backend.",
        "_block_type_name": spec.block_type_name,
        "_logo_url": logo_url(spec.name) if _has_logo(spec.name) else None,
        "_description": spec.description or f"Credentials of the {spec.name} backend.",
        "backend": spec.name,
    }
    # the backend's fields first in the MRO, so that they win over the shared defaults
    return type(spec.credentials_block, (settings, AgentRunsCredentials), namespace)


def credentials_classes() -> list[type[AgentRunsCredentials]]:
    """The credentials block of every registered backend that has one, in registry order.

    What ``AgentRunJob.credentials`` offers in the Blocks catalog (the concrete blocks, never
    the shared base).
    """
    classes: list[type[AgentRunsCredentials]] = []
    for spec in registry.specs():
        if spec.settings is None and _written_for(spec.name) is None:
            continue  # a client-only backend (no block): nothing to offer
        block = credentials_class(spec.name)
        if block not in classes:
            classes.append(block)
    return classes


WorkflowRunsCredentials = credentials_class("workflow_runs")
"""Credentials of the Linkage-style workflow-runs API (seed 002), built from the backend's
settings."""
ProjectThreadsCredentials = credentials_class("project_threads")
"""Credentials of the project thread-runs API (seed 003), built from the backend's
settings."""
