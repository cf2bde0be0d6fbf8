"""Assistants batches watched on their create's stream (``stream: true``), from outside.

The batch engine creates each item's thread, then its run with ``stream: true``, and
learns the run's end and its messages from that one answer: two requests per run. These
tests count, on the emulator, the requests, the runs per item and per thread, and read the
messages list directly (plain httpx, not the code under test) to check every result:

* a clean batch: 2 requests per run, every reply right, results equal to the messages list;
* streams cut right after ``thread.run.created``: polled to the end, nothing created twice;
* a create whose answer is lost (5xx after the run was made, a read timeout) or that failed
  before it was made (5xx): reconciled, exactly one run per item;
* a mix of faults at ~5 % over 320 items: nothing lost, nothing duplicated;
* ``requires_action`` fails the item as before; ``timeout_seconds`` (on an injected clock)
  and cancelling the batch cancel the remote runs.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from prefect_agent_runs import RunStatus
from prefect_agent_runs.backends.openai_assistants import AssistantsClient
from prefect_agent_runs.batch import run_items
from prefect_agent_runs.models import RunOutcome, RunRequest
from prefect_agent_runs.testing import AssistantsEmulator, FakeClock
from prefect_agent_runs.timing import use_clock

ITEM = "item"
"""Run metadata key carrying the item's key (to count runs per item on the emulator)."""
GUARD_SECONDS = 120
"""A guard against a hang, not the subject of any test."""


@pytest.fixture
def emu() -> Iterator[AssistantsEmulator]:
    with AssistantsEmulator(run_seconds=0.2, poll_after_ms=None) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def short_lookup_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_agent_runs.backends import create

    monkeypatch.setattr(create, "LOOKUP_WINDOW_SECONDS", 1.0)


def requests(n: int, *, script: dict[str, Any] | None = None, every: int = 0) -> list[RunRequest]:
    out = []
    for i in range(n):
        metadata = {ITEM: f"item-{i}"}
        if script is not None and (not every or i % every == 0):
            metadata["emulator"] = json.dumps(script)
        out.append(
            RunRequest(
                key=f"item-{i}", assistant_id="asst_echo", message=f"q{i}", metadata=metadata
            )
        )
    return out


def client(emu: AssistantsEmulator, **kwargs: Any) -> AssistantsClient:
    kwargs.setdefault("max_concurrency", 80)
    return AssistantsClient(emu.base_url, api_key="sk-test", **kwargs)


async def batch(
    emu: AssistantsEmulator, items: list[RunRequest], **kwargs: Any
) -> list[RunOutcome]:
    async with client(emu, **kwargs.pop("client", {})) as c:
        with anyio.fail_after(GUARD_SECONDS):
            return await run_items(
                c,
                items,
                policy=kwargs.pop("policy", c.policy),
                max_concurrency=64,
                max_active_runs=64,  # the runs alive fit in the requests in flight: streamed
                **kwargs,
            )


def runs_per_item(emu: AssistantsEmulator) -> Counter[str]:
    return Counter(str(r["metadata"].get(ITEM)) for r in emu.runs())


def listed_messages(http: httpx.Client, thread_id: str, run_id: str) -> list[dict[str, Any]]:
    """The run's messages as ``GET /threads/{t}/messages?run_id=`` answers them (direct)."""
    body = http.get(
        f"/threads/{thread_id}/messages", params={"run_id": run_id, "order": "asc"}
    ).json()
    assert body["has_more"] is False
    return [m for m in body["data"] if m["run_id"] == run_id]


def check_all_completed(emu: AssistantsEmulator, outcomes: list[RunOutcome], n: int) -> None:
    """Every item completed once, with its reply, and its result is the messages list."""
    assert len(outcomes) == n
    failed = [(o.key, o.error) for o in outcomes if not o.ok]
    assert not failed, failed[:3]
    with httpx.Client(base_url=emu.base_url, timeout=30) as http:
        for i, outcome in enumerate(outcomes):
            assert outcome.key == f"item-{i}"
            assert outcome.run is not None and outcome.result is not None
            assert outcome.result.text == f"echo: q{i}", outcome
            assert outcome.result.run_id == outcome.run.id
            assert outcome.result.thread_id == outcome.run.thread_id
            listed = listed_messages(http, str(outcome.run.thread_id), outcome.run.id)
            assert outcome.result.messages == listed
    runs = emu.runs()
    per_item = Counter(str(r["metadata"].get(ITEM)) for r in runs)
    assert len(per_item) == n and max(per_item.values()) == 1, per_item.most_common(3)
    per_thread = Counter(r["thread_id"] for r in runs)
    assert max(per_thread.values()) == 1


def fault_the_creates(emu: AssistantsEmulator, **faults: Any) -> None:
    """Faults on the run creates only (``POST /threads/{id}/runs``), not the thread creates."""
    emu.inject_faults(paths=["/threads/*/runs"], methods=["POST"], **faults)


def streamed_creates(emu: AssistantsEmulator) -> list[Any]:
    return [
        r
        for r in emu.requests
        if r.method == "POST" and r.route.endswith("/runs") and (r.json or {}).get("stream")
    ]


async def test_a_streamed_batch_sends_two_requests_per_run(emu: AssistantsEmulator) -> None:
    n = 300
    outcomes = await batch(emu, requests(n))
    check_all_completed(emu, outcomes, n)
    # the figures before the results were re-read: thread create + streamed run create
    sent = [r for r in emu.requests if r.route.endswith(("/threads", "/runs"))]
    assert Counter((r.method, r.route.rsplit("/", 1)[-1]) for r in sent) == {
        ("POST", "threads"): n,
        ("POST", "runs"): n,
    }
    assert len(emu.requests) == 2 * n + n  # + the n messages lists read by this test
    creates = streamed_creates(emu)
    assert len(creates) == n
    assert all(r.stream_events[-1][0] == "done" for r in creates)


class _CountingClient(AssistantsClient):
    """Counts, at the client's interface, creates whose run does not exist yet and
    streams open (the engine's two bounds), at their peaks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.creating = self.streaming = self.peak_creating = self.peak_streaming = 0

    async def create_and_wait(self, request: RunRequest, **kwargs: Any) -> Any:
        on_created = kwargs.pop("on_created")
        self.creating += 1
        self.peak_creating = max(self.peak_creating, self.creating)
        known = False

        async def created(run: Any) -> None:
            nonlocal known
            if not known:
                known = True
                self.creating -= 1
                self.streaming += 1
                self.peak_streaming = max(self.peak_streaming, self.streaming)
            await on_created(run)

        try:
            return await super().create_and_wait(request, on_created=created, **kwargs)
        finally:
            if known:
                self.streaming -= 1
            else:
                self.creating -= 1


async def test_more_runs_alive_than_requests_in_flight_are_streamed_within_both_bounds() -> None:
    """max_active_runs above max_concurrency: the creates are bounded by max_concurrency,
    the open streams (one per run alive) by max_active_runs, and every run is streamed
    (the defaults of run_batch: 32 requests in flight, 256 runs alive)."""
    n = 40
    with AssistantsEmulator(run_seconds=1.0, poll_after_ms=None) as emu:
        async with _CountingClient(emu.base_url, api_key="sk-test", max_concurrency=80) as c:
            with anyio.fail_after(GUARD_SECONDS):
                outcomes = await run_items(
                    c, requests(n), policy=c.policy, max_concurrency=4, max_active_runs=30
                )
        check_all_completed(emu, outcomes, n)
        assert len(streamed_creates(emu)) == n
        assert not [r for r in emu.requests if r.method == "GET" and "/runs/" in r.route]
    assert c.peak_creating <= 4
    assert 4 < c.peak_streaming <= 30, c.peak_streaming


async def test_a_run_that_fails_or_asks_for_tools_ends_its_item_as_before(
    emu: AssistantsEmulator,
) -> None:
    items = requests(6)
    items[1] = items[1].model_copy(
        update={"metadata": {**items[1].metadata, "emulator": json.dumps({"outcome": "failed"})}}
    )
    items[2] = items[2].model_copy(
        update={
            "metadata": {
                **items[2].metadata,
                "emulator": json.dumps({"outcome": "requires_action", "tool": "lookup"}),
            }
        }
    )
    outcomes = await batch(emu, items)
    by_key = {o.key: o for o in outcomes}
    assert (
        by_key["item-1"].status is RunStatus.FAILED and by_key["item-1"].error_type == "RunFailed"
    )
    assert by_key["item-2"].error_type == "RunRequiresAction"
    assert "lookup" in (by_key["item-2"].error or "")
    assert [o.key for o in outcomes if o.ok] == ["item-0", "item-3", "item-4", "item-5"]
    assert max(runs_per_item(emu).values()) == 1


async def test_streams_cut_after_the_run_was_created_are_polled_to_the_end(
    emu: AssistantsEmulator,
) -> None:
    n = 40
    emu.drop_streams(1.0, after_event="thread.run.created")
    outcomes = await batch(emu, requests(n))
    emu.clear_faults()
    creates = streamed_creates(emu)
    assert len(creates) == n and all(r.dropped for r in creates)  # no create sent twice
    check_all_completed(emu, outcomes, n)
    # each run was read (polled) and its result came from the messages list
    polls = Counter(r.route.split("/")[2] for r in emu.requests if r.method == "GET")
    assert len(polls) == n


@pytest.mark.parametrize(
    "after_commit", [True, False], ids=["answer-lost-after-create", "refused-before-create"]
)
async def test_a_create_that_fails_before_its_first_event_is_reconciled(
    emu: AssistantsEmulator, after_commit: bool
) -> None:
    n = 30
    fault_the_creates(
        emu, rate=0.5, statuses=(500, 502, 503), retry_after=None, seed=3, after_commit=after_commit
    )
    outcomes = await batch(emu, requests(n))
    emu.clear_faults()
    faulted = [r for r in streamed_creates(emu) if r.fault]
    assert len(faulted) >= 8, "too few faults to show anything"
    if after_commit:  # each faulted create made its run: found by its marker, never resent
        assert len(streamed_creates(emu)) == n
    else:  # nothing was made: looked up, then sent again
        assert len(streamed_creates(emu)) == n + len(faulted)
    check_all_completed(emu, outcomes, n)


async def test_a_rate_limited_create_is_sent_again_after_its_retry_after(
    emu: AssistantsEmulator,
) -> None:
    n = 20
    fault_the_creates(emu, rate=0.4, statuses=(429,), retry_after=0.05, seed=9)
    outcomes = await batch(emu, requests(n))
    emu.clear_faults()
    limited = [r for r in streamed_creates(emu) if r.fault == 429]
    assert len(limited) >= 4
    assert len(streamed_creates(emu)) == n + len(limited)  # a 429 made nothing: sent again
    check_all_completed(emu, outcomes, n)


async def test_a_create_whose_answer_times_out_is_found_not_resent(
    emu: AssistantsEmulator,
) -> None:
    n = 12
    fault_the_creates(emu, rate=0.5, statuses=(), delay_seconds=1.5, seed=5, after_commit=True)
    outcomes = await batch(emu, requests(n), client={"request_timeout_seconds": 0.5})
    emu.clear_faults()
    assert len(streamed_creates(emu)) == n
    check_all_completed(emu, outcomes, n)


async def test_a_mix_of_faults_loses_nothing_and_duplicates_nothing(
    emu: AssistantsEmulator,
) -> None:
    n = 320
    emu.inject_faults(
        rate=0.05, statuses=(500, 502, 503), retry_after=None, seed=11, after_commit=True
    )
    emu.drop_streams(0.05, after_event="thread.run.in_progress", seed=12)
    outcomes = await batch(emu, requests(n), client={"max_retries": 6})
    emu.clear_faults()
    assert sum(1 for r in emu.requests if r.fault) >= 10
    assert sum(1 for r in emu.requests if r.dropped) >= 5
    check_all_completed(emu, outcomes, n)


async def test_the_seven_network_faults_of_the_proxy_lose_and_duplicate_nothing(
    emu: AssistantsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault proxy's kinds (resets, stalls, cut bodies, gateway errors, 429s, late
    creates) at 20 % of every request, streams included, in front of a streamed batch."""
    from _proxy import ALL_KINDS, FaultProxy

    from prefect_agent_runs.backends import create

    monkeypatch.setattr(create, "LOOKUP_WINDOW_SECONDS", 2.5)
    n = 100
    with FaultProxy(emu.base_url, stall_seconds=2.5, late_hold_seconds=2.0) as proxy:
        proxy.set_faults(0.2, ALL_KINDS, late_rate=0.1, seed=21)
        async with AssistantsClient(
            proxy.url_for(emu.base_url), api_key="sk-test", request_timeout_seconds=2.0
        ) as c:
            with anyio.fail_after(GUARD_SECONDS):
                outcomes = await run_items(
                    c, requests(n), policy=c.policy, max_concurrency=32, max_active_runs=32
                )
        faults = proxy.counts()
        assert await asyncio.to_thread(proxy.wait_late_delivered, 10)
    assert sum(v for k, v in faults.items() if k != "none") >= 40, faults
    assert streamed_creates(emu), "nothing was streamed"
    check_all_completed(emu, outcomes, n)


async def test_timeout_seconds_on_an_injected_clock_cancels_the_runs_past_it() -> None:
    clock = FakeClock()
    n, timeout = 9, 600.0
    with (
        AssistantsEmulator(run_seconds=0.3, poll_after_ms=None, clock=clock) as emu,
        use_clock(clock, clock.sleep),
    ):
        items = requests(n, script={"outcome": "never"}, every=3)  # items 0, 3, 6
        started = clock()
        async with client(emu) as c:
            with anyio.fail_after(GUARD_SECONDS):
                outcomes = await run_items(
                    c,
                    items,
                    policy=c.policy.with_overrides(timeout_seconds=timeout),
                    max_concurrency=4,
                    max_active_runs=4,
                )
        assert clock() - started >= timeout
        remote = {r["metadata"][ITEM]: r for r in emu.runs()}
        assert len(remote) == n
        for i, outcome in enumerate(outcomes):
            run = remote[outcome.key]
            if i % 3 == 0:
                assert outcome.status is RunStatus.TIMED_OUT, outcome
                assert outcome.error_type == "RunTimedOut"
                assert f"timeout_seconds={timeout:g}" in (outcome.error or "")
                assert "the remote run was cancelled" in (outcome.error or "")
                assert run["status"] == "cancelled", run
            else:
                assert outcome.ok and outcome.result is not None, outcome
                assert outcome.result.text == f"echo: q{i}"
                assert run["status"] == "completed"


async def test_cancelling_a_streamed_batch_cancels_its_remote_runs(
    emu: AssistantsEmulator,
) -> None:
    n = 8
    created: list[str] = []
    all_created = asyncio.Event()

    async def on_created(key: str, run: Any) -> None:
        created.append(key)
        if len(created) == n:
            all_created.set()

    async with client(emu) as c:
        task = asyncio.ensure_future(
            run_items(
                c,
                requests(n, script={"outcome": "never"}),
                policy=c.policy,
                max_concurrency=8,
                max_active_runs=8,
                on_created=on_created,
            )
        )
        with anyio.fail_after(30):
            await all_created.wait()  # on_created fires while the runs go on
        assert all(r["status"] in ("queued", "in_progress") for r in emu.runs())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [r["status"] for r in emu.runs()] == ["cancelled"] * n


async def test_a_cancel_scope_around_a_streamed_batch_cancels_its_remote_runs(
    emu: AssistantsEmulator,
) -> None:
    """Prefect cancels through anyio cancel scopes (re-delivered at every await)."""
    n = 8
    created: list[str] = []

    async def on_created(key: str, run: Any) -> None:
        created.append(key)
        if len(created) == n:
            scope.cancel()

    async with client(emu) as c:
        with anyio.fail_after(30):
            with anyio.CancelScope() as scope:
                await run_items(
                    c,
                    requests(n, script={"outcome": "never"}),
                    policy=c.policy,
                    max_concurrency=8,
                    max_active_runs=8,
                    on_created=on_created,
                )
    assert scope.cancelled_caught
    assert [r["status"] for r in emu.runs()] == ["cancelled"] * n
