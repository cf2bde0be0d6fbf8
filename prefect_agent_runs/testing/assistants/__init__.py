"""The Assistants API v2 emulator (``AssistantsEmulator``); see :mod:`.emulator`."""

from __future__ import annotations

from prefect_agent_runs.testing.assistants.emulator import (
    OUTCOMES,
    TERMINAL_STATUSES,
    AssistantsEmulator,
    FakeClock,
    RecordedRequest,
)

__all__ = ["OUTCOMES", "TERMINAL_STATUSES", "AssistantsEmulator", "FakeClock", "RecordedRequest"]
