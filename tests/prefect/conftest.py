"""Helpers for the Prefect flow tests: LangGraph server queries, a fast Assistants emulator,
subprocess plumbing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # _echo: the Assistants batch items

from _echo import fast_emulator

from prefect_agent_runs.testing import AssistantsEmulator
from prefect_agent_runs.testing._process import spawn

SCRIPTS = Path(__file__).parent / "scripts"
ACTIVE_STATUSES = frozenset({"pending", "running"})


class LangGraphProbe:
    """Reads a LangGraph server directly (not through the code under test)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def batch_threads(self, batch_key: str) -> list[dict[str, Any]]:
        """Every thread tagged with the batch (``POST /threads/search``, paged)."""
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.http.post(
                "/threads/search",
                json={
                    "metadata": {"prefect_agent_runs_batch": batch_key},
                    "limit": 100,
                    "offset": offset,
                },
            )
            page.raise_for_status()
            items = page.json()
            out += items
            if len(items) < 100:
                return out
            offset += len(items)

    def thread_runs(self, thread_id: str) -> list[dict[str, Any]]:
        """Every run of a thread."""
        response = self.http.get(f"/threads/{thread_id}/runs", params={"limit": 100})
        if response.status_code == 404:
            return []
        response.raise_for_status()
        runs: list[dict[str, Any]] = response.json()
        return runs

    def batch_runs(self, batch_key: str) -> list[dict[str, Any]]:
        """Every run of every thread of the batch."""
        return [r for t in self.batch_threads(batch_key) for r in self.thread_runs(t["thread_id"])]

    def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2
    ) -> float:
        """Poll ``predicate`` until true; returns the seconds it took (fails on timeout)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture(scope="session")
def probe(langgraph_url: str) -> Iterator[LangGraphProbe]:
    p = LangGraphProbe(langgraph_url)
    yield p
    p.http.close()


@pytest.fixture
def emulator() -> Iterator[AssistantsEmulator]:
    """A started fast Assistants emulator (``_echo.fast_emulator``)."""
    with fast_emulator() as emu:
        yield emu


@pytest.fixture()
def batch_key() -> str:
    """A batch key unique to the test (ledgers live in the user's result storage)."""
    return f"test-{uuid.uuid4().hex[:10]}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python: this Prefect API, no analytics, quiet logs."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    api_url = PREFECT_API_URL.value()
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        LANGSMITH_TRACING="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def start_script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``tests/prefect/scripts/<name>`` with this interpreter, in a process group of its
    own (end it with ``end_group``)."""
    return spawn(
        [sys.executable, str(SCRIPTS / name), *args],
        env=env or subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
