"""pytest fixtures for the emulators, registered through the ``pytest11`` entry point.

Any project that installs prefect-agent-runs can use them in its own offline tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from prefect_agent_runs.testing.assistants import AssistantsEmulator
    from prefect_agent_runs.testing.project_threads import ProjectThreadsEmulator
    from prefect_agent_runs.testing.workflow_runs import WorkflowRunsEmulator


@pytest.fixture
def assistants_emulator() -> Iterator[AssistantsEmulator]:
    """A started :class:`~prefect_agent_runs.testing.assistants.AssistantsEmulator`.

    Runs complete after 0.2 s with the reply ``"echo: <last user message>"``; script
    other outcomes through the run's ``metadata={"emulator": '{"outcome": "failed"}'}``.
    """
    from prefect_agent_runs.testing.assistants import AssistantsEmulator

    with AssistantsEmulator() as emulator:
        yield emulator


@pytest.fixture
def workflow_runs_emulator() -> Iterator[WorkflowRunsEmulator]:
    """A started :class:`~prefect_agent_runs.testing.workflow_runs.WorkflowRunsEmulator`.

    Runs complete after 0.2 s with the output ``{"text": "echo: <input.message>", ...}``;
    script others through the create body's ``metadata={"emulator": '{"outcome": "failed"}'}``.
    """
    from prefect_agent_runs.testing.workflow_runs import WorkflowRunsEmulator

    with WorkflowRunsEmulator() as emulator:
        yield emulator


@pytest.fixture
def project_threads_emulator() -> Iterator[ProjectThreadsEmulator]:
    """A started :class:`~prefect_agent_runs.testing.project_threads.ProjectThreadsEmulator`.

    Runs complete after 0.2 s with the assistant reply ``"echo: <message>"``; create threads
    with ``emulator.create_thread()``, script runs through an ``emulator: {...}`` line of the
    run's ``instructions``.
    """
    from prefect_agent_runs.testing.project_threads import ProjectThreadsEmulator

    with ProjectThreadsEmulator() as emulator:
        yield emulator
