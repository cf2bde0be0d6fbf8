"""Local emulators of the runs APIs that have no free server, for offline tests and demos.

Example:
    ```python
    from prefect_agent_runs.testing import AssistantsEmulator

    with AssistantsEmulator(run_seconds=0.2) as emu:
        ...  # point a client at emu.base_url (ends in /v1)
    ```
"""

from __future__ import annotations

from prefect_agent_runs.testing.assistants import AssistantsEmulator, FakeClock

# LangGraphDevServer (testing/langgraph_dev.py) is exported here by its author.

__all__ = ["AssistantsEmulator", "FakeClock"]
