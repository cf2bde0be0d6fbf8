"""A global concurrency limit named on the credentials block bounds the requests of two
flow runs together: an emulator counts the requests in flight across both."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_agent_runs.models import METADATA_BATCH_KEY
from prefect_agent_runs.testing import AssistantsEmulator
from prefect_agent_runs.testing._process import run
from prefect_agent_runs.testing.prefect_server import PrefectServer

from .conftest import finish, start_batch


class InFlight:
    """ASGI middleware: counts the HTTP requests being handled, and the most at once."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.now = 0
        self.peak = 0
        self.total = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.now -= 1


@pytest.fixture
def counted() -> Iterator[tuple[AssistantsEmulator, InFlight]]:
    emulator = AssistantsEmulator(run_seconds=0.3, poll_after_ms=20)
    counter = InFlight(emulator.app)
    emulator.app = counter
    # every answer takes 0.1 s, so requests of both flow runs overlap
    emulator.inject_faults(rate=1.0, statuses=(), delay_seconds=0.1)
    with emulator:
        yield emulator, counter


def create_limit(server: PrefectServer, name: str, limit: int) -> None:
    run(
        [sys.executable, "-m", "prefect", "gcl", "create", name, "--limit", str(limit)],
        env=server.env(),
        check=True,
        capture_output=True,
        timeout=120,
    )


def run_two(
    server: PrefectServer, emulator: AssistantsEmulator, barrier: Path, *extra: str
) -> list[str]:
    """Two flow runs of 12 items each, at the same time (a barrier after their Python
    and Prefect start), with the given limit args."""
    keys = [f"limits-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    processes = [
        start_batch(server, emulator.base_url, key, "12", "0", "3", *extra, barrier=f"{barrier}:2")
        for key in keys
    ]
    for process in processes:
        output = finish(process)
        assert process.returncode == 0, output
        assert json.loads(output.strip().splitlines()[-1])["counts"] == {"completed": 12}
    return keys


def overlapped(emulator: AssistantsEmulator, keys: list[str]) -> bool:
    """Whether the two batches' runs were alive at the same time."""
    spans = []
    for key in keys:
        runs = [r for r in emulator.runs() if r["metadata"].get(METADATA_BATCH_KEY) == key]
        assert len(runs) == 12
        spans.append((min(r["created_at"] for r in runs), max(r["completed_at"] for r in runs)))
    (a_start, a_end), (b_start, b_end) = spans
    return a_start <= b_end and b_start <= a_end


def test_two_flow_runs_share_one_global_concurrency_limit(
    prefect_server: PrefectServer, counted: tuple[AssistantsEmulator, InFlight], tmp_path: Path
) -> None:
    emulator, counter = counted
    name = f"assistants-api-{uuid.uuid4().hex[:6]}"
    create_limit(prefect_server, name, 3)

    run_two(prefect_server, emulator, tmp_path, name)  # asserts each batch completed

    # The two flow runs run at once (the barrier), but their remote runs need not overlap:
    # Prefect's limit may serve one flow run's requests while the other backs off (a clean
    # CI saw that once in three). Without the limit they do overlap (the test below).
    assert counter.total >= 2 * 12 * 2  # creates, polls and reads of both flow runs
    assert counter.peak <= 3, counter.peak
    assert counter.peak == 3  # the limit was reached: both flow runs were queuing for it


def test_without_the_limit_the_same_two_flow_runs_go_past_it(
    prefect_server: PrefectServer, counted: tuple[AssistantsEmulator, InFlight], tmp_path: Path
) -> None:
    emulator, counter = counted
    keys = run_two(prefect_server, emulator, tmp_path)
    assert overlapped(emulator, keys)
    assert counter.peak > 3, counter.peak


def test_a_limit_that_does_not_exist_fails_the_items_clearly(
    prefect_server: PrefectServer, counted: tuple[AssistantsEmulator, InFlight]
) -> None:
    emulator, counter = counted
    process = start_batch(
        prefect_server,
        emulator.base_url,
        f"nolimit-{uuid.uuid4().hex[:6]}",
        "2",
        "0",
        "0.1",
        "no-such-limit",
    )
    output = finish(process)
    assert process.returncode == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert sum(report["counts"].values()) == 2 and "completed" not in report["counts"]
    (error,) = report["errors"]
    assert "global concurrency limit 'no-such-limit'" in error
    assert "prefect gcl create no-such-limit" in error
    assert counter.total == 0  # nothing was sent without the limit
