"""Local servers for offline tests and demos: emulators of the runs APIs that have no free
server, and a helper that starts the real LangGraph Agent Server (``langgraph dev``).

Example:
    ```python
    from prefect_agent_runs.testing import AssistantsEmulator

    with AssistantsEmulator(run_seconds=0.2) as emu:
        ...  # point a client at emu.base_url (ends in /v1)
    ```
"""

from __future__ import annotations

from prefect_agent_runs.testing.assistants import AssistantsEmulator, FakeClock
from prefect_agent_runs.testing.langgraph_dev import LangGraphDevServer
from prefect_agent_runs.testing.project_threads import ProjectThreadsEmulator
from prefect_agent_runs.testing.workflow_runs import WorkflowRunsEmulator

__all__ = [
    "AssistantsEmulator",
    "FakeClock",
    "LangGraphDevServer",
    "ProjectThreadsEmulator",
    "WorkflowRunsEmulator",
]
