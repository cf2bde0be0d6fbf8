"""The backend registry: name -> client class, credentials, status map, error parser,
capabilities.

A backend package registers itself when it is imported (``register(BackendSpec(...))`` in
its ``__init__``); the CLI, the blocks, ``AgentRunJob`` and the flows' hooks read the
registry and ask :meth:`BackendSpec.has` (never ``getattr``). Adding a backend touches no
file outside its own package, its emulator, its tests and its docs:

* the packages under :mod:`prefect_agent_runs.backends` are found by :func:`discover`;
* a backend in another distribution registers through the entry point group
  ``prefect_agent_runs.backends`` (the entry point's value is the module to import);
* a test registers one with :func:`register` (and :func:`unregister` afterwards).

Backends never import Prefect: a backend declares its credentials as a plain pydantic
model (:attr:`BackendSpec.settings`, secrets as ``SecretStr``) and the name of its block
class (:attr:`BackendSpec.credentials_block`); the block layer
(:func:`prefect_agent_runs.blocks.credentials_class`) turns that into a Prefect block.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from prefect_agent_runs.errors import NotSupported
from prefect_agent_runs.http import ErrorParser
from prefect_agent_runs.models import STATUS_MAPS, RunRequest, RunStatus

if TYPE_CHECKING:
    from prefect_agent_runs.backends.base import BaseRunsClient

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendSpec",
    "Demo",
    "DemoSetup",
    "discover",
    "get",
    "names",
    "register",
    "specs",
    "unregister",
]

logger = logging.getLogger("prefect_agent_runs.backends.registry")

ENTRY_POINT_GROUP = "prefect_agent_runs.backends"
"""Entry point group through which other distributions add backends."""


@dataclass(frozen=True)
class Demo:
    """What ``prefect-agent-runs demo --backend NAME`` runs: a local server and items.

    Attributes:
        config: The credentials' fields (``base_url``, secret...) that reach the server.
        requests: The demo's items.
        description: One line that says what runs where (printed on stderr).
    """

    config: Mapping[str, Any]
    requests: list[RunRequest]
    description: str


DemoSetup = Callable[[int], AbstractContextManager[Demo]]
"""Starts a backend's local server for ``n`` demo items; raises RuntimeError if it cannot."""


@dataclass(frozen=True)
class BackendSpec:
    """What a backend registers.

    The client class is the one source of what the backend does: its ``capabilities``,
    its ``status_map`` and its ``error_parser`` are class attributes of the client, and
    this spec reads them there.

    Attributes:
        name: The backend's name (``"langgraph"``), the client's ``backend``.
        client: The client class (a :class:`~prefect_agent_runs.backends.base.BaseRunsClient`).
        credentials_block: The name of the credentials block class
            (``"LangGraphCredentials"``), importable from ``prefect_agent_runs.blocks``.
        block_type_name: Prefect's display name of that block (``"LangGraph Credentials"``).
        settings: The credentials' fields as a pydantic model (secrets as ``SecretStr``);
            the block layer builds the block from it when no block class was written
            for the backend. Its docstring becomes the block's.
        description: One line about the platform (block description, CLI help).
        secret_field: The settings field that holds the secret (``api_key``, ``token``).
        make_client: Builds a client from the credentials' values (secrets as plain
            strings) and the caller's overrides; default: ``client(**values, **overrides)``.
        demo: Sets up ``prefect-agent-runs demo --backend NAME`` (None: no demo).
        cli_options: CLI flags that set a settings field, by flag (``{"api_version":
            "api_version"}`` for ``--api-version``).
    """

    name: str
    client: type[BaseRunsClient]
    credentials_block: str
    block_type_name: str
    settings: type[BaseModel] | None = None
    description: str = ""
    secret_field: str = "api_key"
    make_client: Callable[..., BaseRunsClient] | None = None
    demo: DemoSetup | None = None
    cli_options: Mapping[str, str] = field(default_factory=dict)

    @property
    def capabilities(self) -> frozenset[str]:
        """The optional operations the backend has (see ``Capability``)."""
        return self.client.capabilities

    @property
    def status_map(self) -> Mapping[str, RunStatus]:
        """Server status word -> :class:`~prefect_agent_runs.models.RunStatus`."""
        return self.client.status_map

    @property
    def error_parser(self) -> ErrorParser | None:
        """Reads (message, code, field errors) from the server's error bodies."""
        return self.client.error_parser

    def has(self, capability: str) -> bool:
        """True when the backend has the optional operation ``capability``.

        Args:
            capability: A ``Capability`` name.
        """
        return capability in self.capabilities

    def build_client(self, values: Mapping[str, Any], **overrides: Any) -> BaseRunsClient:
        """A client from the credentials' values and the caller's overrides.

        Args:
            values: The credentials' fields, secrets as plain strings.
            **overrides: Client arguments that replace the values.
        """
        if self.make_client is not None:
            return self.make_client(values, **overrides)
        return self.client(**{**dict(values), **overrides})


_lock = threading.RLock()
_specs: dict[str, BackendSpec] = {}
_discovered = False


def register(spec: BackendSpec) -> BackendSpec:
    """Add a backend (its status map becomes :data:`~prefect_agent_runs.models.STATUS_MAPS`'s).

    Registering the same spec again is harmless; another spec under a registered name is
    refused (unregister the first).

    Args:
        spec: The backend.

    Returns:
        The spec.

    Raises:
        ValueError: Another backend has this name, or the client's ``backend`` differs.
    """
    if spec.client.backend != spec.name:
        raise ValueError(
            f"backend {spec.name!r}: its client {spec.client.__name__} says backend="
            f"{spec.client.backend!r}"
        )
    with _lock:
        current = _specs.get(spec.name)
        if current is not None and current != spec:
            raise ValueError(f"a backend named {spec.name!r} is registered already")
        _specs[spec.name] = spec
        STATUS_MAPS[spec.name] = dict(spec.status_map)
    return spec


def unregister(name: str) -> None:
    """Remove a backend (tests).

    Args:
        name: The backend's name.
    """
    with _lock:
        _specs.pop(name, None)
        STATUS_MAPS.pop(name, None)


def discover() -> None:
    """Import every backend package and every ``prefect_agent_runs.backends`` entry point.

    Runs once; a package that fails to import is logged and skipped (its backend is
    then unknown, and asking for it says so).
    """
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True
        import prefect_agent_runs.backends as package

        modules = [
            f"{package.__name__}.{info.name}"
            for info in pkgutil.iter_modules(package.__path__)
            if info.ispkg
        ]
        modules += [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:
                logger.error("could not import backend module %s: %s", module, exc)


def get(name: str) -> BackendSpec:
    """The backend named ``name``.

    Args:
        name: The backend's name.

    Raises:
        NotSupported: No such backend (the message lists the known ones).
    """
    spec = _specs.get(name)
    if spec is None:
        discover()
        spec = _specs.get(name)
    if spec is None:
        known = ", ".join(names()) or "none"
        raise NotSupported(
            f"{name}: no such backend is built (known backends: {known})", backend=name
        )
    return spec


def names() -> list[str]:
    """The names of every backend, sorted."""
    discover()
    return sorted(_specs)


def specs() -> Iterator[BackendSpec]:
    """Every backend, by name."""
    for name in names():
        yield _specs[name]
