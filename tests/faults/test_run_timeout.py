"""``timeout_seconds`` per run through ``run_batch`` (issue 13 item 4, last bullet).

Runs scripted never to finish time out on an injected clock
(:func:`prefect_agent_runs.timing.use_clock`; the emulator reads the same
:class:`FakeClock`): nothing sleeps, a 600 s deadline passes in a second of polls. Each such item's outcome names its run and the deadline, its
remote run is cancelled on the emulator (or left running with ``cancel_on_timeout=False``),
and the other items complete with their replies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from _harness import new_batch_key

from prefect_agent_runs import AssistantsCredentials, RunStatus
from prefect_agent_runs.flows import run_batch
from prefect_agent_runs.models import METADATA_BATCH_KEY, METADATA_ITEM_KEY
from prefect_agent_runs.testing import AssistantsEmulator, FakeClock
from prefect_agent_runs.timing import use_clock

pytestmark = pytest.mark.usefixtures("prefect_harness")

TIMEOUT = 600.0
NEVER_EVERY = 3
"""Items 0, 3, 6... never finish."""
N = 10
REAL_SECONDS = 120
"""A guard, not the subject: a run_batch that waited on the real clock would wait 600 s."""


@pytest.fixture
def clocked() -> Iterator[tuple[AssistantsEmulator, FakeClock]]:
    clock = FakeClock()
    # no poll hint: the client's own backoff (1 s growing to 15 s) moves the clock
    with (
        AssistantsEmulator(run_seconds=0.5, poll_after_ms=None, clock=clock) as emu,
        use_clock(clock, clock.sleep),
    ):
        yield emu, clock


def items() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(N):
        item: dict[str, Any] = {"key": f"item-{i}", "assistant_id": "asst_echo", "message": f"q{i}"}
        if i % NEVER_EVERY == 0:
            item["metadata"] = {"emulator": json.dumps({"outcome": "never"})}
        out.append(item)
    return out


def remote_runs(emu: AssistantsEmulator, batch_key: str) -> dict[str, dict[str, Any]]:
    runs = [r for r in emu.runs() if r["metadata"].get(METADATA_BATCH_KEY) == batch_key]
    by_key = {r["metadata"][METADATA_ITEM_KEY]: r for r in runs}
    assert len(by_key) == len(runs) == N
    return by_key


@pytest.mark.parametrize("cancel_on_timeout", [True, False])
async def test_runs_past_timeout_seconds_time_out_and_only_they(
    clocked: tuple[AssistantsEmulator, FakeClock], cancel_on_timeout: bool
) -> None:
    emu, clock = clocked
    batch_key = new_batch_key("timeout")
    credentials = AssistantsCredentials(base_url=emu.base_url, api_key="sk-test-key")
    started = clock()
    with anyio.fail_after(REAL_SECONDS):
        state = await run_batch(
            credentials,
            items(),
            batch_key=batch_key,
            timeout_seconds=TIMEOUT,
            cancel_on_timeout=cancel_on_timeout,
            max_concurrency=4,
            return_state=True,
        )
    result = await state.result()
    assert clock() - started >= TIMEOUT  # the deadline passed on the injected clock
    remote = remote_runs(emu, batch_key)
    never = [f"item-{i}" for i in range(0, N, NEVER_EVERY)]
    for i, outcome in enumerate(result.outcomes):
        run = remote[outcome.key]
        if outcome.key in never:
            assert outcome.error_type == "RunTimedOut", outcome
            assert outcome.status is RunStatus.TIMED_OUT
            assert outcome.run is not None and outcome.run.id == run["id"]
            assert f"{run['id']} on thread {run['thread_id']}" in (outcome.error or "")
            assert f"timeout_seconds={TIMEOUT:g}" in (outcome.error or "")
            if cancel_on_timeout:
                assert "the remote run was cancelled" in (outcome.error or "")
                assert run["status"] == "cancelled", run
            else:
                assert "the remote run goes on" in (outcome.error or "")
                assert run["status"] == "in_progress", run
        else:
            assert outcome.ok and outcome.result is not None, outcome
            assert outcome.result.text == f"echo: q{i}"
            assert run["status"] == "completed"
    assert len(result.failed) == len(never)
    assert state.message == f"{N - len(never)} completed, {len(never)} timed_out"


def test_sync_run_batch_reads_the_injected_clock_too(
    clocked: tuple[AssistantsEmulator, FakeClock],
) -> None:
    """The sync flow runs its body in an event loop of its own: the clock goes along."""
    emu, clock = clocked
    batch_key = new_batch_key("timeout-sync")
    credentials = AssistantsCredentials(base_url=emu.base_url, api_key="sk-test-key")
    started = clock()
    result = run_batch(credentials, items(), batch_key=batch_key, timeout_seconds=TIMEOUT)
    assert clock() - started >= TIMEOUT
    never = {f"item-{i}" for i in range(0, N, NEVER_EVERY)}
    assert {o.key for o in result.outcomes if o.status is RunStatus.TIMED_OUT} == never
    assert {
        k for k, r in remote_runs(emu, batch_key).items() if r["status"] == "cancelled"
    } == never
    assert len(result.completed) == N - len(never)
