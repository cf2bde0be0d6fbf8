"""Which Prefect events a batch emits at each ``events`` level (tests/native reads them back
from a real Prefect server; this checks every level's choice in process)."""

from __future__ import annotations

from typing import Any

import prefect.events
import pytest

from prefect_agent_runs.errors import ValidationError
from prefect_agent_runs.flows.events import EVENT_LEVELS, RunEventEmitter
from prefect_agent_runs.models import Run, RunOutcome, RunStatus


def _run(status: RunStatus, i: int) -> Run:
    return Run(
        id=f"run-{i}",
        thread_id=f"thread-{i}",
        backend="langgraph",
        status=status,
        raw_status=status.value,
    )


def _emitted(level: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(item key, event) for two items seen queued, running, then completed / failed."""
    sent: list[tuple[str, str]] = []

    def emit_event(*, event: str, resource: dict[str, str], **_: Any) -> object:
        sent.append((resource["prefect-agent-runs.key"], event.rsplit(".", 1)[1]))
        return object()

    monkeypatch.setattr(prefect.events, "emit_event", emit_event)
    emitter = RunEventEmitter("langgraph", "batch-1", level)
    for i, end in ((0, RunStatus.COMPLETED), (1, RunStatus.FAILED)):
        for status in (RunStatus.QUEUED, RunStatus.QUEUED, RunStatus.RUNNING):
            emitter.run_seen(str(i), _run(status, i))
        error = "boom" if end is RunStatus.FAILED else None
        emitter.outcome(RunOutcome(key=str(i), run=_run(end, i), error=error))
    assert emitter.emitted == len(sent)
    return sent


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("failures", [("1", "failed")]),
        ("ends", [("0", "completed"), ("1", "failed")]),
        (
            "changes",
            [
                ("0", "queued"),
                ("0", "running"),
                ("0", "completed"),
                ("1", "queued"),
                ("1", "running"),
                ("1", "failed"),
            ],
        ),
        ("none", []),
    ],
)
def test_each_level_emits_what_it_names(
    level: str, expected: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _emitted(level, monkeypatch) == expected


def test_every_level_is_tested_and_failures_is_the_default() -> None:
    assert set(EVENT_LEVELS) == {"failures", "ends", "changes", "none"}
    assert RunEventEmitter("langgraph", None).level == "failures"


def test_an_unknown_level_is_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError, match=r"events must be one of 'failures', 'ends'"):
        RunEventEmitter("langgraph", None, "all")  # type: ignore[arg-type]
