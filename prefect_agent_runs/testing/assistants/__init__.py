"""The Assistants API v2 emulator (``AssistantsEmulator``); see :mod:`.emulator`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

from prefect_agent_runs.backends.registry import Demo
from prefect_agent_runs.models import RunRequest
from prefect_agent_runs.testing._demo import demo_seconds
from prefect_agent_runs.testing.assistants.emulator import (
    OUTCOMES,
    TERMINAL_STATUSES,
    AssistantsEmulator,
    FakeClock,
    RecordedRequest,
)

__all__ = [
    "DEMO_ASSISTANT_ID",
    "OUTCOMES",
    "TERMINAL_STATUSES",
    "AssistantsEmulator",
    "FakeClock",
    "RecordedRequest",
    "demo",
]


DEMO_ASSISTANT_ID = "asst_demo"
"""The assistant id of the demo batch (any id works against the emulator)."""


@contextlib.contextmanager
def demo(items: int) -> Iterator[Demo]:
    """``prefect-agent-runs demo`` (the default backend): the emulator and echo items.

    Args:
        items: How many demo runs.
    """
    with AssistantsEmulator(run_seconds=0.2) as emulator:
        yield Demo(
            config={"base_url": emulator.base_url, "api_key": "demo"},
            requests=[
                RunRequest(
                    assistant_id=DEMO_ASSISTANT_ID,
                    key=f"item-{i:03d}",
                    message=f"hello from demo item {i}",
                    metadata={"emulator": json.dumps({"seconds": demo_seconds(i)})},
                )
                for i in range(1, items + 1)
            ],
            description=f"{items} runs on the built-in Assistants API emulator at "
            f"{emulator.base_url}",
        )
