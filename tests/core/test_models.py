"""The normalized model: statuses (DESIGN.md's table), requests, outcomes, batch results."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone

import pydantic
import pytest

from prefect_agent_runs.models import (
    METADATA_ITEM_KEY,
    STATUS_MAPS,
    BatchFailed,
    BatchResult,
    Run,
    RunOutcome,
    RunRequest,
    RunStatus,
    ThreadResult,
    normalize_status,
)

S = RunStatus

# -- statuses -------------------------------------------------------------------------------


def test_terminal_and_success_sets() -> None:
    terminal = {s for s in RunStatus if s.is_terminal}
    assert terminal == {
        S.COMPLETED,
        S.FAILED,
        S.CANCELLED,
        S.EXPIRED,
        S.INCOMPLETE,
        S.INTERRUPTED,
        S.TIMED_OUT,
    }
    assert {s for s in RunStatus if s.is_success} == {S.COMPLETED}
    for active in (S.QUEUED, S.RUNNING, S.REQUIRES_ACTION, S.CANCELLING, S.UNKNOWN):
        assert not active.is_terminal


def test_every_status_name() -> None:
    assert [s.name for s in RunStatus] == [
        "QUEUED",
        "RUNNING",
        "REQUIRES_ACTION",
        "CANCELLING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "EXPIRED",
        "INCOMPLETE",
        "INTERRUPTED",
        "TIMED_OUT",
        "UNKNOWN",
    ]


# DESIGN.md, "Normalized model": normalized | OpenAI-compatible | LangGraph | project threads
DESIGN_TABLE: list[tuple[RunStatus, str | None, str | None, str | None]] = [
    (S.QUEUED, "queued", "pending", "queued"),
    (S.RUNNING, "in_progress", "running", "in_progress"),
    (S.REQUIRES_ACTION, "requires_action", None, None),
    (S.CANCELLING, "cancelling", None, None),
    (S.COMPLETED, "completed", "success", "completed"),
    (S.FAILED, "failed", "error", "failed"),
    (S.CANCELLED, "cancelled", None, None),
    (S.EXPIRED, "expired", None, "expired"),
    (S.INCOMPLETE, "incomplete", None, None),
    (S.INTERRUPTED, None, "interrupted", None),
    (S.TIMED_OUT, None, "timeout", None),
]
BACKENDS = ("openai_assistants", "langgraph", "project_threads")
ROWS = [
    (backend, raw, normalized)
    for normalized, *raws in DESIGN_TABLE
    for backend, raw in zip(BACKENDS, raws, strict=True)
    if raw is not None
]


@pytest.mark.parametrize(("backend", "raw", "expected"), ROWS)
def test_design_table_row(backend: str, raw: str, expected: RunStatus) -> None:
    assert normalize_status(backend, raw) is expected
    assert normalize_status(backend, raw.upper()) is expected


def test_status_maps_have_exactly_the_design_rows() -> None:
    for backend in BACKENDS:
        expected = {raw: normalized for b, raw, normalized in ROWS if b == backend}
        assert STATUS_MAPS[backend] == expected


@pytest.mark.parametrize(
    ("backend", "raw"),
    [
        ("openai_assistants", "success"),  # a LangGraph word
        ("langgraph", "completed"),  # an OpenAI word
        ("langgraph", "cancelled"),
        ("project_threads", "requires_action"),
        ("project_threads", "cancelled"),
        ("openai_assistants", "paused"),
        ("openai_assistants", ""),
        ("openai_assistants", None),
        ("no_such_backend", "completed"),
    ],
)
def test_unknown_statuses(backend: str, raw: str | None) -> None:
    status = normalize_status(backend, raw)
    assert status is S.UNKNOWN
    assert not status.is_terminal
    assert not status.is_success


def test_status_is_a_string_enum() -> None:
    assert S.COMPLETED == "completed"
    assert S("timed_out") is S.TIMED_OUT


# -- Run ---------------------------------------------------------------------------------------


def test_run_key_and_describe() -> None:
    run = Run(
        id="r1",
        thread_id="t1",
        status=S.RUNNING,
        raw_status="in_progress",
        backend="openai_assistants",
        metadata={METADATA_ITEM_KEY: 7},
        raw={"id": "r1", "status": "in_progress"},
    )
    assert run.key == "7"
    assert run.describe() == "run r1 on thread t1 (in_progress)"
    assert "raw=" not in repr(run)
    bare = Run(id="r2", status=S.QUEUED, backend="b")
    assert bare.key is None
    assert bare.describe() == "run r2 (queued)"
    with pytest.raises(pydantic.ValidationError):
        run.id = "other"  # type: ignore[misc]


# -- RunRequest -------------------------------------------------------------------------------


@pytest.mark.parametrize("assistant_id", ["", "   ", "\t"])
def test_run_request_rejects_empty_assistant(assistant_id: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="assistant_id"):
        RunRequest(assistant_id=assistant_id)


def test_run_request_requires_assistant() -> None:
    with pytest.raises(pydantic.ValidationError):
        RunRequest()  # type: ignore[call-arg]


def test_run_request_defaults_and_metadata() -> None:
    request = RunRequest(assistant_id="a1", message="hi", key="k1", metadata={"a": 1, "b": 2})
    assert request.thread_id is None
    assert request.input is None
    assert request.options == {}
    tagged = request.with_metadata({"b": 3, "c": 4})
    assert tagged.metadata == {"a": 1, "b": 3, "c": 4}
    assert request.metadata == {"a": 1, "b": 2}  # the original is unchanged
    assert tagged.key == "k1"
    assert tagged.message == "hi"
    with pytest.raises(pydantic.ValidationError):
        request.key = "k2"  # type: ignore[misc]


def test_run_request_json_round_trip() -> None:
    request = RunRequest(
        assistant_id="a1",
        thread_id="t1",
        input={"messages": [{"role": "user", "content": "x"}]},
        instructions="be brief",
        key="k1",
        options={"temperature": 0.2},
    )
    assert RunRequest.model_validate_json(request.model_dump_json()) == request


# -- outcomes and batch results ---------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def run(status: RunStatus, run_id: str, **kwargs: object) -> Run:
    return Run(
        id=run_id,
        thread_id=f"t_{run_id}",
        status=status,
        raw_status=status.value,
        backend="fake",
        **kwargs,  # type: ignore[arg-type]
    )


def outcome_ok(key: str = "a") -> RunOutcome:
    return RunOutcome(
        key=key,
        run=run(
            S.COMPLETED,
            f"r_{key}",
            created_at=T0,
            started_at=T0 + timedelta(seconds=1),
            completed_at=T0 + timedelta(seconds=3),
            raw={"id": f"r_{key}", "nested": {"x": [1, 2]}},
        ),
        result=ThreadResult(thread_id=f"t_r_{key}", run_id=f"r_{key}", text="echo: hi"),
        attempts=1,
        seconds_queued=1.0,
        seconds_running=2.0,
    )


def make_batch() -> BatchResult:
    return BatchResult(
        batch_key="b1",
        outcomes=[
            outcome_ok("a"),
            RunOutcome(
                key="b",
                run=run(S.FAILED, "r_b", error="boom"),
                error="run r_b failed: boom",
                error_type="RunFailed",
                attempts=1,
            ),
            RunOutcome(key="c", error="fake: create failed: HTTP 400", error_type="BadRequest"),
            RunOutcome(key="d", run=run(S.CANCELLED, "r_d"), error="cancelled", resumed=True),
        ],
    )


def test_outcome_status_and_ok() -> None:
    assert outcome_ok().ok
    assert outcome_ok().status is S.COMPLETED
    never = RunOutcome(key="x")
    assert never.status is S.UNKNOWN
    assert not never.ok
    # a completed run with an error recorded (e.g. the result could not be read) is not ok
    flawed = outcome_ok().model_copy(update={"error": "could not read messages"})
    assert not flawed.ok


def test_batch_counts_completed_failed() -> None:
    batch = make_batch()
    assert batch.counts == {"completed": 1, "failed": 1, "unknown": 1, "cancelled": 1}
    assert [o.key for o in batch.completed] == ["a"]
    assert [o.key for o in batch.failed] == ["b", "c", "d"]
    assert batch.failure_ratio == 0.75


def test_to_records() -> None:
    records = make_batch().to_records()
    assert [r["key"] for r in records] == ["a", "b", "c", "d"]
    assert records[0] == {
        "key": "a",
        "thread_id": "t_r_a",
        "run_id": "r_a",
        "status": "completed",
        "raw_status": "completed",
        "ok": True,
        "text": "echo: hi",
        "error": None,
        "error_type": None,
        "attempts": 1,
        "resumed": False,
        "seconds_queued": 1.0,
        "seconds_running": 2.0,
    }
    assert records[2]["run_id"] is None
    assert records[2]["status"] == "unknown"
    assert records[2]["error_type"] == "BadRequest"
    assert records[3]["resumed"] is True


@pytest.mark.parametrize(
    ("fail_on", "expected"),
    [("never", False), ("any", True), (0.0, True), (0.5, True), (0.75, False), (1.0, False)],
)
def test_should_fail(fail_on: str | float, expected: bool) -> None:
    assert make_batch().should_fail(fail_on) is expected  # type: ignore[arg-type]


def test_should_fail_on_all_good_and_empty() -> None:
    good = BatchResult(batch_key="b", outcomes=[outcome_ok("a"), outcome_ok("b")])
    empty = BatchResult(batch_key="b")
    for batch in (good, empty):
        assert batch.should_fail("any") is False
        assert batch.should_fail(0.0) is False
        assert batch.failure_ratio == 0.0


@pytest.mark.parametrize("fail_on", [1.5, -0.1, "sometimes", None])
def test_should_fail_rejects_bad_values(fail_on: object) -> None:
    with pytest.raises(ValueError, match="fail_on"):
        make_batch().should_fail(fail_on)  # type: ignore[arg-type]


def test_raise_on_failure() -> None:
    batch = make_batch()
    with pytest.raises(BatchFailed) as info:
        batch.raise_on_failure()
    assert info.value.result is batch
    message = str(info.value)
    assert "'b1'" in message
    assert "3 of 4 items" in message
    assert "b: run r_b failed: boom" in message
    assert batch.raise_on_failure("never") is batch
    assert batch.raise_on_failure(0.9) is batch
    good = BatchResult(batch_key="g", outcomes=[outcome_ok()])
    assert good.raise_on_failure() is good


def test_raise_on_failure_lists_five_and_counts_the_rest() -> None:
    batch = BatchResult(
        batch_key="big", outcomes=[RunOutcome(key=f"k{i}", error=f"e{i}") for i in range(8)]
    )
    with pytest.raises(BatchFailed) as info:
        batch.raise_on_failure()
    message = str(info.value)
    assert "k4: e4" in message
    assert "k5" not in message
    assert "(and 3 more)" in message


def test_merge_keeps_order() -> None:
    one = BatchResult(batch_key="s1", outcomes=[outcome_ok("a"), outcome_ok("b")])
    two = BatchResult(batch_key="s2", outcomes=[RunOutcome(key="c", error="x")])
    merged = BatchResult.merge("all", [one, two, BatchResult(batch_key="s3")])
    assert merged.batch_key == "all"
    assert [o.key for o in merged.outcomes] == ["a", "b", "c"]
    assert merged.counts == {"completed": 2, "unknown": 1}


def test_batch_result_json_round_trip() -> None:
    batch = make_batch()
    text = batch.model_dump_json()
    again = BatchResult.model_validate_json(text)
    assert again == batch
    assert again.outcomes[0].run is not None
    assert again.outcomes[0].run.created_at == T0
    assert again.outcomes[0].run.raw == {"id": "r_a", "nested": {"x": [1, 2]}}
    assert again.to_records() == batch.to_records()
    assert BatchResult.model_validate(batch.model_dump(mode="json")) == batch


def test_batch_result_and_failure_pickle() -> None:
    batch = make_batch()
    assert pickle.loads(pickle.dumps(batch)) == batch
    error = BatchFailed(batch)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is BatchFailed
    assert str(copy) == str(error)
    assert copy.result == batch
