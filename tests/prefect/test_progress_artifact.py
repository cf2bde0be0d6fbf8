"""The progress artifact's last word is the final count (a flake of test_fail_on_and_artifacts).

``close()`` used to cancel the updater mid-request: the cancelled update (80 %) could still
reach the server after the final one (100 %), and the artifact stayed at 80 %.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest

from prefect_agent_runs.flows import _artifacts
from prefect_agent_runs.flows._artifacts import ProgressReporter


class SlowArtifacts:
    """A Prefect client whose artifact updates take a while, recording how each ended."""

    def __init__(self) -> None:
        self.sent: list[float] = []
        self.finished: list[float] = []
        self.cancelled: list[float] = []
        self.in_flight = asyncio.Event()

    async def update_artifact(self, artifact_id: Any, update: Any) -> None:
        self.sent.append(update.data)
        self.in_flight.set()
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            self.cancelled.append(update.data)
            raise
        self.finished.append(update.data)


async def test_close_lets_the_update_in_flight_finish_then_sends_the_final_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def create(**kwargs: Any) -> Any:
        return uuid4()

    monkeypatch.setattr(_artifacts, "acreate_progress_artifact", create)
    api = SlowArtifacts()
    progress = ProgressReporter("b", 10, interval_seconds=0.01)
    await progress.start(api)  # type: ignore[arg-type]
    progress.advance(8, status="completed")
    await asyncio.wait_for(api.in_flight.wait(), timeout=10)  # the 80 % update is in flight
    progress.advance(2, status="completed")
    await progress.close()
    assert api.cancelled == []
    assert api.sent[0] == 80.0
    assert api.finished[-1] == 100.0
    assert api.finished == api.sent  # in order, each one finished before the next was sent
