"""What a batch keeps of each item (``_compact.py``): smaller, and the same values.

A batch holds every outcome until it returns. On the (in-process) Assistants emulator an
outcome was 8.0 KB, 2.2 KB of it pydantic's per-instance set of field names and about 1 KB
the short strings and ints each item decoded anew. These tests hold the batch's outcomes
under a size per item, and hold that sharing changes no value and leaks no change from one
outcome to another.
"""

from __future__ import annotations

import copy
import gc
import pickle
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect_agent_runs import AssistantsCredentials, RunRequest
from prefect_agent_runs._compact import MAX_POOLED, Compactor, SharedNames
from prefect_agent_runs.batch import run_items
from prefect_agent_runs.models import Run, RunOutcome, RunStatus, ThreadResult
from prefect_agent_runs.testing import AssistantsEmulator

BYTES_PER_OUTCOME = 5_500
"""The bound on one emulator outcome here: 4.5 KB measured with sharing, 7.9 KB without."""


def _size(objects: list[Any]) -> int:
    """Bytes of everything ``objects`` reach, each object once (shared ones too)."""
    seen: set[int] = set()
    stack: list[Any] = list(objects)
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def _outcome(i: int, *, created: datetime | None = None) -> RunOutcome:
    raw = {
        "id": f"run_{i}",
        "object": "thread.run",
        "status": "completed",
        "created_at": 1796314045,
        "usage": {"total_tokens": 5},
        "tools": [],
        "temperature": -0.0,
        "flag": True,
    }
    run = Run(
        id=f"run_{i}",
        thread_id=f"thread_{i}",
        status=RunStatus.COMPLETED,
        raw_status="completed",
        backend="openai_assistants",
        created_at=created,
        metadata={"prefect_agent_runs_key": str(i)},
        raw=raw,
    )
    result = ThreadResult(
        thread_id=f"thread_{i}",
        run_id=f"run_{i}",
        messages=[{"role": "assistant", "content": [{"type": "text", "text": f"t{i}"}]}],
        text=f"t{i}",
    )
    return RunOutcome(key=str(i), run=run, result=result, attempts=1)


async def test_a_batch_on_the_emulator_keeps_less_than_its_bound_per_item(
    assistants_emulator: AssistantsEmulator,
) -> None:
    n = 200
    credentials = AssistantsCredentials(base_url=assistants_emulator.base_url, api_key="sk-x")
    requests = [
        RunRequest(key=f"item-{i}", assistant_id="asst_echo", message=f"q{i}") for i in range(n)
    ]
    async with credentials.get_client(max_concurrency=32) as client:
        outcomes = await run_items(
            client, requests, policy=client.policy, max_concurrency=32, fresh=True
        )
    assert [o.result.text for o in outcomes if o.result] == [f"echo: q{i}" for i in range(n)]
    # the first outcome pays for what the others share
    per_item = (_size(outcomes) - _size(outcomes[:1])) / (n - 1)
    assert per_item <= BYTES_PER_OUTCOME, f"{per_item:.0f} bytes per outcome"
    names = {id(m.__pydantic_fields_set__) for o in outcomes for m in (o, o.run, o.result)}
    assert len(names) <= 6
    statuses = {id(o.run.raw["status"]) for o in outcomes if o.run}
    assert len(statuses) == 1


def test_sharing_changes_no_value() -> None:
    tz = timezone(timedelta(hours=1))
    utc_time = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
    outcomes = [_outcome(0, created=utc_time), _outcome(1, created=utc_time.astimezone(tz))]
    before = [copy.deepcopy(o.model_dump()) for o in outcomes]
    compactor = Compactor()
    for outcome in outcomes:
        compactor.outcome(outcome)
    assert [o.model_dump() for o in outcomes] == before
    a, b = (o.run for o in outcomes)
    assert a is not None and b is not None
    assert a.raw["status"] is b.raw["status"] and a.raw["object"] is b.raw["object"]
    assert a.raw["created_at"] is b.raw["created_at"]
    # equal, but not the same value: kept apart
    assert a.created_at is not None and b.created_at is not None
    assert a.created_at == b.created_at and b.created_at.tzinfo == tz
    assert a.raw["flag"] is True and str(a.raw["temperature"]) == "-0.0"
    # containers stay each outcome's own
    assert a.raw["usage"] is not b.raw["usage"] and a.raw["tools"] is not b.raw["tools"]
    assert outcomes[0].model_fields_set is outcomes[1].model_fields_set


def test_a_long_string_is_not_shared_and_the_pool_is_bounded() -> None:
    compactor = Compactor()
    long = ["x" * 100 + str(i // 2) for i in range(2)]  # two equal strings, built apart
    many = [{"k": f"v{i}"} for i in range(MAX_POOLED + 10)]
    compactor._tree(long)
    compactor._tree(many)
    assert long[0] is not long[1]
    assert all(len(pool) <= MAX_POOLED for pool in compactor._pools.values())


def test_a_shared_outcome_changed_later_changes_alone() -> None:
    first, second = _outcome(0), _outcome(1)
    compactor = Compactor()
    compactor.outcome(first)
    compactor.outcome(second)
    assert isinstance(second.model_fields_set, SharedNames)
    assert second.model_fields_set is first.model_fields_set
    second.error = "failed later"
    assert "error" in second.model_fields_set
    assert "error" not in first.model_fields_set and first.error is None
    assert first.result is not None and second.result is not None
    second.result.text = "changed"
    assert first.result.text == "t0" and "values" not in first.result.model_fields_set
    # copies, deep copies and pickles of shared models are independent and equal
    run = first.run
    assert run is not None
    changed = run.model_copy(update={"error": "x"})
    assert changed.error == "x" and "error" in changed.model_fields_set
    assert "error" not in run.model_fields_set
    deep = first.model_copy(deep=True)
    deep.attempts = 3
    assert first.attempts == 1 and "attempts" in first.model_fields_set
    back = pickle.loads(pickle.dumps(first))
    assert back == first and back.model_fields_set == first.model_fields_set
    back.resumed = True
    assert first.resumed is False
