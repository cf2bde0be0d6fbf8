"""Shared fixtures: the real LangGraph Agent Server and a Prefect test harness.

Both are session-scoped: the server starts once (about 2 s) on a free loopback port,
and the Prefect harness starts one temporary Prefect server for every test that needs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("LANGSMITH_TRACING", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from prefect_agent_runs.testing.langgraph_dev import LangGraphDevServer
from prefect_agent_runs.testing.prefect_server import PrefectServer


@pytest.fixture(scope="session")
def openai_openapi_path() -> Path:
    """OpenAI's published OpenAPI document, trimmed to the Assistants paths (in the package)."""
    from prefect_agent_runs.testing.schemas import OPENAI_OPENAPI

    return OPENAI_OPENAPI


@pytest.fixture(scope="session")
def linkage_openapi_path() -> Path:
    """The Linkage SDK's OpenAPI document (workflow runs), shipped in the package."""
    from prefect_agent_runs.testing.schemas import LINKAGE_OPENAPI

    return LINKAGE_OPENAPI


@pytest.fixture(scope="session")
def project_threads_swagger_path() -> Path:
    """The project thread-runs swagger, shipped in the package."""
    from prefect_agent_runs.testing.schemas import PROJECT_THREADS_SWAGGER

    return PROJECT_THREADS_SWAGGER


@pytest.fixture(scope="session")
def langgraph_server() -> Iterator[LangGraphDevServer]:
    """The real LangGraph Agent Server (``langgraph dev``) serving the ``echo`` graph."""
    with LangGraphDevServer(n_jobs_per_worker=64) as server:
        yield server


@pytest.fixture(scope="session")
def langgraph_url(langgraph_server: LangGraphDevServer) -> str:
    """Base URL of the session's LangGraph server."""
    return langgraph_server.base_url


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (and database) for the session's Prefect tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectServer]:
    """A real ``prefect server start`` (SQLite, free loopback port) for other processes:
    served deployments, process workers, events from flow runs in subprocesses."""
    with PrefectServer() as server:
        yield server
