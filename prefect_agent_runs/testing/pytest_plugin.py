"""pytest fixtures for the emulators, registered through the ``pytest11`` entry point.

Any project that installs prefect-agent-runs can use them in its own offline tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def assistants_emulator() -> Iterator[Any]:
    """A started :class:`~prefect_agent_runs.testing.assistants.AssistantsEmulator`."""
    from prefect_agent_runs.testing.assistants import AssistantsEmulator

    with AssistantsEmulator() as emulator:
        yield emulator
