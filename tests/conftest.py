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

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_file(name: str) -> Path:
    """``shared/reference/<name>`` beside (or above) the repository; a clear failure if absent.

    The platforms' published API schemas live there (CI clones the repository with
    ``shared/`` beside it). A contract test never skips for want of them.
    """
    for base in (REPO_ROOT, *REPO_ROOT.parents):
        candidate = base / "shared" / "reference" / name
        if candidate.is_file():
            return candidate
    pytest.fail(
        f"shared/reference/{name} is missing: expected it beside the repository root "
        f"{REPO_ROOT} (at {REPO_ROOT.parent / 'shared' / 'reference'}). The contract tests "
        "check our requests and the emulators against it and cannot run without it.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def openai_openapi_path() -> Path:
    """OpenAI's published OpenAPI document (threads, runs and messages schemas)."""
    return reference_file("openai-openapi.yaml")


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

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectServer]:
    """A real ``prefect server start`` (SQLite, free loopback port) for other processes:
    served deployments, process workers, events from flow runs in subprocesses."""
    with PrefectServer() as server:
        yield server
