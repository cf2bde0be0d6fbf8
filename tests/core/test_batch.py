"""The batch engine against an in-memory fake backend that really keeps its runs."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from prefect_agent_runs.batch import run_items, watch_runs
from prefect_agent_runs.errors import (
    AgentRunsError,
    BadRequest,
    NotFound,
    RunTimedOut,
    ServerError,
)
from prefect_agent_runs.models import (
    METADATA_ITEM_KEY,
    Run,
    RunOutcome,
    RunRequest,
    RunStatus,
    ThreadResult,
)
from prefect_agent_runs.waiting import PollPolicy

POLICY = PollPolicy(timeout_seconds=60, jitter=0.0)


@dataclass
class Script:
    """How the fake server treats one item (chosen by the request's metadata ``script``)."""

    ticks: int = 1  # event-loop turns the run takes
    outcome: RunStatus = RunStatus.COMPLETED
    create_error: AgentRunsError | None = None
    wait_error: str | None = None  # "timeout" or "server"
    result_error: AgentRunsError | None = None


class FakeClient:
    """An in-memory backend: runs are created, stored, advanced, listed and cancelled."""

    backend = "fake"

    def __init__(self, *, can_find: bool = True) -> None:
        self.can_find = can_find
        self.runs: dict[str, Run] = {}
        self.scripts: dict[str, Script] = {}
        self._ids = itertools.count(1)
        self.calls: dict[str, int] = {
            "create_run": 0,
            "find_run": 0,
            "get_run": 0,
            "wait_for_run": 0,
            "get_result": 0,
            "cancel_run": 0,
        }
        self.in_flight = 0
        self.max_in_flight = 0
        self.waits_cancelled: list[str] = []

    # -- server-side helpers --

    def _store(self, run: Run, **changes: Any) -> Run:
        run = run.model_copy(update=changes)
        self.runs[run.id] = run
        return run

    def add_run(self, key: str, status: RunStatus, script: Script | None = None) -> Run:
        run_id = f"run_{next(self._ids)}"
        self.scripts[run_id] = script or Script()
        return self._store(
            Run(
                id=run_id,
                thread_id=f"thread_{run_id}",
                status=status,
                raw_status=status.value,
                backend=self.backend,
                metadata={METADATA_ITEM_KEY: key},
            )
        )

    # -- the BatchClient protocol --

    async def create_run(self, request: RunRequest) -> Run:
        self.calls["create_run"] += 1
        await asyncio.sleep(0)
        script: Script = request.options.get("script", Script())
        if script.create_error is not None:
            raise script.create_error
        assert request.key is not None
        return self.add_run(request.key, RunStatus.QUEUED, script)

    async def find_run(self, request: RunRequest) -> Run | None:
        self.calls["find_run"] += 1
        await asyncio.sleep(0)
        if not self.can_find:
            return None
        for run in self.runs.values():
            if run.key == request.key:
                return run
        return None

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        self.calls["get_run"] += 1
        await asyncio.sleep(0)
        try:
            return self.runs[run_id]
        except KeyError:
            raise NotFound(f"fake: run {run_id} not found", status_code=404) from None

    async def wait_for_run(
        self,
        run: Run | str,
        *,
        thread_id: str | None = None,
        timeout_seconds: float | None = None,
        cancel_on_timeout: bool = True,
        policy: PollPolicy | None = None,
        on_change: Callable[[Run], Any] | None = None,
    ) -> Run:
        self.calls["wait_for_run"] += 1
        run_id = run if isinstance(run, str) else run.id
        current = self.runs[run_id]
        script = self.scripts[run_id]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if current.status.is_terminal:
                return current
            if current.status is not RunStatus.RUNNING:
                current = self._store(current, status=RunStatus.RUNNING, raw_status="running")
                if on_change is not None:
                    on_change(current)
            for _ in range(script.ticks):
                await asyncio.sleep(0)
            if script.wait_error == "timeout":
                raise RunTimedOut("fake: run did not finish within timeout_seconds", run=current)
            if script.wait_error == "server":
                raise ServerError("fake: get run failed: HTTP 502", status_code=502)
            current = self._store(current, status=script.outcome, raw_status=script.outcome.value)
            if on_change is not None:
                on_change(current)
            return current
        except asyncio.CancelledError:
            self.waits_cancelled.append(run_id)
            raise
        finally:
            self.in_flight -= 1

    async def get_result(self, run: Run) -> ThreadResult:
        self.calls["get_result"] += 1
        await asyncio.sleep(0)
        script = self.scripts[run.id]
        if script.result_error is not None:
            raise script.result_error
        return ThreadResult(thread_id=run.thread_id, run_id=run.id, text=f"echo: {run.key}")

    async def cancel_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        self.calls["cancel_run"] += 1
        return self._store(self.runs[run_id], status=RunStatus.CANCELLED, raw_status="cancelled")


def req(key: str, **script: Any) -> RunRequest:
    options = {"script": Script(**script)} if script else {}
    return RunRequest(assistant_id="a1", message=f"hello {key}", key=key, options=options)


def fixed_clock() -> float:
    return 0.0


# -- run_items -------------------------------------------------------------------------------


async def test_outcomes_in_request_order() -> None:
    client = FakeClient()
    requests = [req(f"k{i}", ticks=10 - i) for i in range(10)]  # later items finish first
    finished: list[str] = []

    outcomes = await run_items(
        client, requests, policy=POLICY, on_outcome=lambda o: finished.append(o.key)
    )
    assert [o.key for o in outcomes] == [f"k{i}" for i in range(10)]
    assert finished != [o.key for o in outcomes]  # reported as they ended
    assert sorted(finished) == sorted(o.key for o in outcomes)
    for o in outcomes:
        assert o.ok
        assert o.run is not None
        assert o.run.key == o.key
        assert o.result is not None
        assert o.result.text == f"echo: {o.key}"
        assert o.attempts == 1
        assert not o.resumed
    assert client.calls["create_run"] == 10
    assert len(client.runs) == 10


async def test_failed_items_do_not_stop_others() -> None:
    client = FakeClient()
    requests = [
        req("ok1"),
        req(
            "bad_request", create_error=BadRequest("fake: create failed: HTTP 400", status_code=400)
        ),
        req("failed", outcome=RunStatus.FAILED),
        req("expired", outcome=RunStatus.EXPIRED),
        req("timeout", wait_error="timeout", ticks=3),
        req("flaky", wait_error="server"),
        req("no_result", result_error=ServerError("fake: list messages: 500", status_code=500)),
        req("ok2", ticks=5),
    ]
    outcomes = await run_items(client, requests, policy=POLICY, clock=fixed_clock)
    by_key = {o.key: o for o in outcomes}
    assert [o.key for o in outcomes if o.ok] == ["ok1", "ok2"]

    bad = by_key["bad_request"]
    assert bad.run is None
    assert bad.error_type == "BadRequest"
    assert bad.error is not None and "HTTP 400" in bad.error
    assert bad.attempts == 1

    failed = by_key["failed"]
    assert failed.run is not None and failed.run.status is RunStatus.FAILED
    assert failed.error is not None and "failed" in failed.error

    assert by_key["expired"].status is RunStatus.EXPIRED
    assert by_key["expired"].error is not None

    timed_out = by_key["timeout"]
    assert timed_out.error_type == "RunTimedOut"
    assert timed_out.run is not None and timed_out.run.status is RunStatus.RUNNING
    assert timed_out.status is RunStatus.TIMED_OUT  # how the item ended: our deadline

    assert by_key["flaky"].error_type == "ServerError"
    assert by_key["no_result"].error_type == "ServerError"
    assert by_key["no_result"].status is RunStatus.COMPLETED
    assert not by_key["no_result"].ok


async def test_resume_adopts_found_runs() -> None:
    client = FakeClient()
    requests = [req("a"), req("b"), req("c", create_error=ServerError("x", status_code=503))]
    first = await run_items(client, requests, policy=POLICY)
    assert [o.ok for o in first] == [True, True, False]
    assert client.calls["create_run"] == 3

    # the rerun: a and b are found and adopted, c is created again (now it works)
    second = await run_items(client, [req("a"), req("b"), req("c")], policy=POLICY)
    assert client.calls["create_run"] == 4
    assert [o.ok for o in second] == [True, True, True]
    assert [o.resumed for o in second] == [True, True, False]
    assert [o.attempts for o in second] == [0, 0, 1]
    assert second[0].run is not None and first[0].run is not None
    assert second[0].run.id == first[0].run.id
    assert len(client.runs) == 3


async def test_resume_false_always_creates() -> None:
    client = FakeClient()
    await run_items(client, [req("a")], policy=POLICY)
    await run_items(client, [req("a")], policy=POLICY, resume=False)
    assert client.calls["create_run"] == 2
    assert client.calls["find_run"] == 1


async def test_fresh_batch_looks_nothing_up() -> None:
    client = FakeClient()
    known = client.add_run("a", RunStatus.RUNNING)
    outcomes = await run_items(
        client, [req("a"), req("b")], policy=POLICY, fresh=True, known_runs={"a": known}
    )
    assert client.calls["find_run"] == 0 and client.calls["get_run"] == 0
    assert client.calls["create_run"] == 2
    assert not any(o.resumed for o in outcomes)


async def test_resume_from_known_runs() -> None:
    client = FakeClient(can_find=False)  # the server cannot search by key
    running = client.add_run("a", RunStatus.RUNNING)
    done = client.add_run("b", RunStatus.COMPLETED)
    outcomes = await run_items(
        client,
        [req("a"), req("b"), req("c")],
        policy=POLICY,
        known_runs={"a": running, "b": done},
    )
    assert client.calls["create_run"] == 1  # only c
    assert client.calls["get_run"] == 2
    assert [o.resumed for o in outcomes] == [True, True, False]
    assert all(o.ok for o in outcomes)
    assert outcomes[0].run is not None and outcomes[0].run.id == running.id


async def test_callbacks_once_per_item() -> None:
    client = FakeClient()
    client.add_run("resumed", RunStatus.RUNNING)
    created: list[tuple[str, str]] = []
    reported: list[RunOutcome] = []
    changes: list[tuple[str, RunStatus]] = []

    async def on_outcome(outcome: RunOutcome) -> None:  # async callbacks are awaited
        await asyncio.sleep(0)
        reported.append(outcome)

    requests = [
        req("a", ticks=2),
        req("b"),
        req("resumed"),
        req("bad", create_error=BadRequest("no", status_code=400)),
    ]
    outcomes = await run_items(
        client,
        requests,
        policy=POLICY,
        on_created=lambda key, run: created.append((key, run.id)),
        on_outcome=on_outcome,
        on_change=lambda key, run: changes.append((key, run.status)),
    )
    assert sorted(k for k, _ in created) == ["a", "b", "resumed"]  # not for a failed create
    assert sorted(o.key for o in reported) == ["a", "b", "bad", "resumed"]
    assert {id(o) for o in reported} == {id(o) for o in outcomes}
    assert changes.count(("a", RunStatus.RUNNING)) == 1
    assert changes.count(("a", RunStatus.COMPLETED)) == 1
    assert ("resumed", RunStatus.COMPLETED) in changes
    assert not any(k == "bad" for k, _ in changes)


async def test_concurrency_bound() -> None:
    client = FakeClient()
    requests = [req(f"k{i}", ticks=(i % 4) + 2) for i in range(25)]
    outcomes = await run_items(client, requests, policy=POLICY, max_concurrency=3)
    assert all(o.ok for o in outcomes)
    assert client.max_in_flight == 3


async def test_concurrency_one_is_sequential() -> None:
    client = FakeClient()
    order: list[str] = []
    requests = [req(f"k{i}", ticks=5 - i) for i in range(5)]
    await run_items(
        client,
        requests,
        policy=POLICY,
        max_concurrency=1,
        on_outcome=lambda o: order.append(o.key),
    )
    assert client.max_in_flight == 1
    assert order == [f"k{i}" for i in range(5)]


async def test_collect_results_false() -> None:
    client = FakeClient()
    outcomes = await run_items(client, [req("a")], policy=POLICY, collect_results=False)
    assert outcomes[0].ok
    assert outcomes[0].result is None
    assert client.calls["get_result"] == 0


@pytest.mark.parametrize(
    "keys",
    [["a", "b", "a"], ["a", None]],
    ids=["duplicate", "missing"],
)
async def test_keys_must_be_unique_and_present(keys: list[str | None]) -> None:
    client = FakeClient()
    requests = [RunRequest(assistant_id="a1", key=k) for k in keys]
    with pytest.raises(ValueError, match="unique"):
        await run_items(client, requests, policy=POLICY)
    assert client.calls["create_run"] == 0
    assert client.calls["find_run"] == 0


async def test_empty_batch() -> None:
    assert await run_items(FakeClient(), [], policy=POLICY) == []


async def test_seconds_running_is_measured_with_the_monotonic_clock() -> None:
    client = FakeClient()
    ticks = iter([10.0, 12.5])
    outcomes = await run_items(
        client, [req("a")], policy=PollPolicy(jitter=0.0), clock=lambda: next(ticks)
    )
    assert outcomes[0].seconds_running == 2.5
    assert outcomes[0].seconds_queued is None


# -- watch_runs ------------------------------------------------------------------------------


async def test_watch_runs_yields_as_runs_end() -> None:
    client = FakeClient()
    slow = client.add_run("slow", RunStatus.QUEUED, Script(ticks=20))
    fast = client.add_run("fast", RunStatus.QUEUED, Script(ticks=1))
    middle = client.add_run("middle", RunStatus.RUNNING, Script(ticks=8, outcome=RunStatus.FAILED))
    broken = client.add_run("broken", RunStatus.RUNNING, Script(ticks=4, wait_error="timeout"))

    seen: list[Run | AgentRunsError] = []
    async for item in watch_runs(client, [slow, fast, middle, broken], policy=POLICY):
        seen.append(item)
    assert len(seen) == 4
    assert isinstance(seen[0], Run) and seen[0].id == fast.id
    assert isinstance(seen[1], RunTimedOut) and seen[1].run.id == broken.id
    assert isinstance(seen[2], Run) and seen[2].id == middle.id
    assert seen[2].status is RunStatus.FAILED
    assert isinstance(seen[3], Run) and seen[3].id == slow.id
    assert seen[3].status is RunStatus.COMPLETED


async def test_watch_runs_respects_concurrency() -> None:
    client = FakeClient()
    runs = [client.add_run(f"k{i}", RunStatus.QUEUED, Script(ticks=3)) for i in range(10)]
    count = 0
    async for _ in watch_runs(client, runs, policy=POLICY, max_concurrency=2):
        count += 1
    assert count == 10
    assert client.max_in_flight == 2


async def test_watch_runs_stopped_early_cancels_the_rest() -> None:
    client = FakeClient()
    fast = client.add_run("fast", RunStatus.QUEUED, Script(ticks=1))
    slow = [client.add_run(f"s{i}", RunStatus.QUEUED, Script(ticks=1000)) for i in range(3)]
    watcher = watch_runs(client, [fast, *slow], policy=POLICY)
    first = await watcher.__anext__()
    assert isinstance(first, Run) and first.id == fast.id
    await watcher.aclose()
    assert sorted(client.waits_cancelled) == sorted(r.id for r in slow)
    assert client.in_flight == 0


async def test_watch_runs_empty() -> None:
    assert [r async for r in watch_runs(FakeClient(), [], policy=POLICY)] == []


async def test_unexpected_error_in_one_item_does_not_stop_others() -> None:
    class Buggy(FakeClient):
        async def get_result(self, run: Run) -> ThreadResult:
            if run.key == "bad":
                raise KeyError("content")
            return await super().get_result(run)

    client = Buggy()
    outcomes = await run_items(client, [req("a"), req("bad"), req("b")], policy=POLICY)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1].error_type == "KeyError"


# -- the pool: requests in flight, runs alive, streaming, bulk watching ------------------------


class CountingClient(FakeClient):
    """Counts runs alive on the server (created, not yet seen terminal)."""

    def __init__(self) -> None:
        super().__init__(can_find=False)
        self.alive = 0
        self.max_alive = 0
        self.creating = 0
        self.max_creating = 0

    async def create_run(self, request: RunRequest) -> Run:
        self.creating += 1
        self.max_creating = max(self.max_creating, self.creating)
        try:
            run = await super().create_run(request)
        finally:
            self.creating -= 1
        self.alive += 1
        self.max_alive = max(self.max_alive, self.alive)
        return run

    async def wait_for_run(self, run: Run | str, **kwargs: Any) -> Run:
        done = await super().wait_for_run(run, **kwargs)
        self.alive -= 1
        return done


async def test_max_active_runs_bounds_runs_alive_not_creates() -> None:
    client = CountingClient()
    requests = [req(f"k{i}", ticks=3) for i in range(40)]
    outcomes = await run_items(
        client, requests, policy=POLICY, max_concurrency=8, max_active_runs=5
    )
    assert all(o.ok for o in outcomes)
    assert client.max_alive <= 5
    assert client.max_creating <= 5


async def test_unbounded_active_runs_lets_creates_run_ahead_of_waits() -> None:
    client = CountingClient()
    requests = [req(f"k{i}", ticks=50) for i in range(30)]
    outcomes = await run_items(
        client, requests, policy=POLICY, max_concurrency=2, max_active_runs=None
    )
    assert all(o.ok for o in outcomes)
    assert client.max_creating <= 2  # requests bounded by max_concurrency
    assert client.max_alive > 2  # but runs alive are not: the server queues them
    assert client.max_in_flight <= 2  # watched one by one, two at a time


async def test_default_max_active_runs_per_backend() -> None:
    from prefect_agent_runs.backends import registry
    from prefect_agent_runs.batch import BOUNDED_ACTIVE_RUNS, default_max_active_runs

    def default(name: str) -> int | None:
        return default_max_active_runs(registry.get(name).capabilities)

    assert default("langgraph") is None  # its server queues runs
    for name in ("openai_assistants", "workflow_runs", "project_threads"):
        assert default(name) == BOUNDED_ACTIVE_RUNS


async def test_iterator_is_pulled_as_workers_need_items() -> None:
    client = FakeClient()
    pulled = 0

    async def items() -> Any:
        nonlocal pulled
        for i in range(50):
            pulled += 1
            yield req(f"k{i}", ticks=2)

    first_outcome_at: list[int] = []

    def on_outcome(_: RunOutcome) -> None:
        if not first_outcome_at:
            first_outcome_at.append(pulled)

    outcomes = await run_items(
        client, items(), policy=POLICY, max_concurrency=2, max_active_runs=4, on_outcome=on_outcome
    )
    assert [o.key for o in outcomes] == [f"k{i}" for i in range(50)]
    assert all(o.ok for o in outcomes)
    assert first_outcome_at[0] <= 6  # not every item read before the first ended


async def test_iterator_with_a_repeated_key_fails_that_item_only() -> None:
    client = FakeClient()
    outcomes = await run_items(
        client, iter([req("a"), req("b"), req("a")]), policy=POLICY, max_concurrency=1
    )
    assert [o.ok for o in outcomes] == [True, True, False]
    assert outcomes[2].error_type == "ValidationError"
    assert client.calls["create_run"] == 2


class BulkClient(FakeClient):
    """A fake with the bulk_watch capability: one call reports on every run."""

    capabilities = frozenset({"bulk_watch"})

    def __init__(self, *, fail_sweeps: int = 0) -> None:
        super().__init__(can_find=False)
        self.sweeps = 0
        self.fail_sweeps = fail_sweeps
        self.swept_sizes: list[int] = []

    async def watch_many(self, runs: Any) -> list[Run]:
        self.sweeps += 1
        self.swept_sizes.append(len(runs))
        if self.fail_sweeps:
            self.fail_sweeps -= 1
            raise ServerError("fake: search failed: HTTP 503", status_code=503)
        out = []
        for run in runs:
            current = self.runs[run.id]
            script = self.scripts[run.id]
            script.ticks -= 1
            if script.ticks <= 0 and not current.status.is_terminal:
                current = self._store(
                    current, status=script.outcome, raw_status=script.outcome.value
                )
            out.append(current)
        return out


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_bulk_watch_watches_many_runs_per_request() -> None:
    client = BulkClient()
    requests = [req(f"k{i}", ticks=2 + i % 3) for i in range(20)]
    requests.append(req("bad", ticks=1, outcome=RunStatus.FAILED))
    changes: list[tuple[str, RunStatus]] = []
    outcomes = await run_items(
        client,
        requests,
        policy=POLICY,
        max_concurrency=4,
        max_active_runs=None,
        sleep=no_sleep,
        on_change=lambda k, r: changes.append((k, r.status)),
    )
    assert [o.ok for o in outcomes] == [True] * 20 + [False]
    assert outcomes[-1].status is RunStatus.FAILED
    assert client.calls["wait_for_run"] == 0
    assert client.sweeps < 21  # far fewer requests than runs
    assert max(client.swept_sizes) > 1
    assert ("k0", RunStatus.COMPLETED) in changes


async def test_bulk_watch_tolerates_transient_sweep_errors() -> None:
    client = BulkClient(fail_sweeps=3)
    outcomes = await run_items(
        client, [req("a", ticks=1)], policy=POLICY, max_active_runs=None, sleep=no_sleep
    )
    assert outcomes[0].ok


async def test_bulk_watch_times_out_and_cancels() -> None:
    client = BulkClient()
    now = [0.0]

    async def advance(_: float) -> None:
        now[0] += 10.0
        await asyncio.sleep(0)

    outcomes = await run_items(
        client,
        [req("slow", ticks=1000)],
        policy=PollPolicy(timeout_seconds=25, jitter=0.0),
        max_active_runs=None,
        sleep=advance,
        clock=lambda: now[0],
    )
    assert outcomes[0].error_type == "RunTimedOut"
    assert client.calls["cancel_run"] == 1
    assert client.runs[outcomes[0].run.id].status is RunStatus.CANCELLED  # type: ignore[union-attr]


# -- the heap while a batch runs (prefect_agent_runs._heap) ----------------------------------


async def test_objects_alive_before_a_batch_are_frozen_while_it_runs_and_thawed_after() -> None:
    import gc

    assert gc.get_freeze_count() == 0
    seen: list[int] = []
    slow = RunRequest(assistant_id="a1", message="slow", key="slow", options={})
    client = FakeClient()
    first = asyncio.ensure_future(
        run_items(
            client,
            [req(f"a{i}", ticks=20) for i in range(3)],
            policy=POLICY,
            on_outcome=lambda o: seen.append(gc.get_freeze_count()),
        )
    )
    await asyncio.sleep(0)
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # the modules, the test session, this test's objects
    # a second batch in the same process while the first runs: frozen once, thawed once
    await run_items(client, [req("b0"), slow], policy=POLICY)
    assert gc.get_freeze_count() > 1000  # not thawed: the first batch still runs
    await first
    assert len(seen) == 3 and min(seen) > 1000
    assert gc.get_freeze_count() == 0  # thawed: what died meanwhile can be collected


async def test_a_process_that_froze_its_own_objects_is_left_alone() -> None:
    import gc

    gc.freeze()
    try:
        before = gc.get_freeze_count()
        during: list[int] = []
        await run_items(
            FakeClient(),
            [req("k0"), req("k1")],
            policy=POLICY,
            on_outcome=lambda o: during.append(gc.get_freeze_count()),
        )
        # nothing more was frozen (the engine's own objects would count), nothing thawed
        assert len(during) == 2 and 0 < max(during) <= before
        assert 0 < gc.get_freeze_count() <= before
    finally:
        gc.unfreeze()
