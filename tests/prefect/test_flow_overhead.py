"""What the batch flow costs Prefect at the end of a batch (issue 16, item 5).

On return, Prefect's flow engine walks the returned value for futures. A BatchResult holds
none, and walking 10,000 outcomes (their runs' raw JSON, their messages) cost 7.8 s of CPU
and 137 MB of transient memory: the flow's final state hides its data from that walk.
"""

from __future__ import annotations

import pickle

from prefect.futures import resolve_futures_to_states
from prefect.utilities.collections import visit_collection

from prefect_agent_runs.flows.batch import _state
from prefect_agent_runs.models import BatchResult, Run, RunOutcome, RunStatus, ThreadResult


def _outcome(i: int) -> RunOutcome:
    run = Run(
        id=f"run_{i}",
        thread_id=f"thread_{i}",
        status=RunStatus.COMPLETED,
        backend="openai_assistants",
        raw={"id": f"run_{i}", "usage": {"total_tokens": i}, "tools": [{"type": "x"}]},
    )
    return RunOutcome(
        key=str(i),
        run=run,
        result=ThreadResult(run_id=run.id, messages=[{"content": [{"text": f"t{i}"}]}]),
    )


def _visited(expr: object) -> list[object]:
    seen: list[object] = []

    def visit(value: object) -> object:
        seen.append(value)
        return value

    visit_collection(expr, visit_fn=visit, return_data=False)
    return seen


def test_prefect_does_not_walk_the_outcomes_of_the_final_state() -> None:
    result = BatchResult(batch_key="b", outcomes=[_outcome(i) for i in range(50)])
    state = _state(result, "50 completed")
    visited = _visited(state)
    assert not any(isinstance(v, (RunOutcome, BatchResult, Run)) for v in visited)
    assert len(visited) < 40  # the state's own fields, not 50 outcomes' worth
    assert resolve_futures_to_states(state) is state


def test_the_final_state_still_carries_its_result() -> None:
    result = BatchResult(batch_key="b", outcomes=[_outcome(i) for i in range(3)])
    state = _state(result, "3 completed")
    assert state.is_completed()
    assert state.message == "3 completed"
    assert state.data is result
    assert state.model_dump()["data"]["outcomes"][2]["key"] == "2"
    copy = pickle.loads(pickle.dumps(state))
    assert copy.data == result
