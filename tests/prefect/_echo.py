"""Items and a fast emulator for the Assistants batch tests (test_batch_scale,
test_run_batch_assistants): each item ``item-<i>`` asks ``q<i>`` and the emulator answers
``echo: q<i>``; every ``fail_every``-th item is scripted to fail."""

from __future__ import annotations

import json
from typing import Any

from prefect_agent_runs import RunRequest
from prefect_agent_runs.models import METADATA_BATCH_KEY
from prefect_agent_runs.testing import AssistantsEmulator


def fast_emulator() -> AssistantsEmulator:
    """An Assistants emulator whose runs end after 50 ms (poll hint 20 ms); not started."""
    return AssistantsEmulator(run_seconds=0.05, poll_after_ms=20)


def echo_requests(n: int, *, fail_every: int = 0) -> list[RunRequest]:
    """``n`` requests keyed ``item-<i>``; item ``i`` fails when ``fail_every`` divides it."""
    out = []
    for i in range(n):
        metadata = {}
        if fail_every and i % fail_every == 0:
            metadata["emulator"] = json.dumps({"outcome": "failed"})
        out.append(
            RunRequest(
                key=f"item-{i}", assistant_id="asst_echo", message=f"q{i}", metadata=metadata
            )
        )
    return out


def batch_runs(emulator: AssistantsEmulator, batch_key: str) -> list[dict[str, Any]]:
    """The emulator's runs tagged with ``batch_key``."""
    return [
        r for r in emulator.runs() if (r.get("metadata") or {}).get(METADATA_BATCH_KEY) == batch_key
    ]
