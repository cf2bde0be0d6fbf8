"""pytest fixtures for the emulators, registered through the ``pytest11`` entry point.

Any project that installs prefect-agent-runs can use them in its own offline tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from prefect_agent_runs.testing.assistants import AssistantsEmulator


@pytest.fixture
def assistants_emulator() -> Iterator[AssistantsEmulator]:
    """A started :class:`~prefect_agent_runs.testing.assistants.AssistantsEmulator`.

    Runs complete after 0.2 s with the reply ``"echo: <last user message>"``; script
    other outcomes through the run's ``metadata={"emulator": '{"outcome": "failed"}'}``.
    """
    from prefect_agent_runs.testing.assistants import AssistantsEmulator

    with AssistantsEmulator() as emulator:
        yield emulator
