"""run_batch on the OpenAI-compatible Assistants backend (the emulator, no free server).

The Assistants API has no search by metadata, so resuming a batch rests on the ledger in
Prefect's result storage: these tests show a rerun starts nothing twice.
"""

from __future__ import annotations

from collections import Counter

import pytest
from _echo import batch_runs, echo_requests

from prefect_agent_runs import AssistantsCredentials, RunStatus
from prefect_agent_runs.flows import run_batch
from prefect_agent_runs.models import METADATA_ITEM_KEY
from prefect_agent_runs.testing import AssistantsEmulator

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def test_run_batch_200_items_on_the_assistants_emulator(
    emulator: AssistantsEmulator, batch_key: str
) -> None:
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test-key")
    result = await run_batch(
        credentials,
        echo_requests(200, fail_every=10),
        batch_key=batch_key,
        max_concurrency=32,
        max_active_runs=32,
    )
    assert len(result.outcomes) == 200
    for i, outcome in enumerate(result.outcomes):
        assert outcome.key == f"item-{i}"
        if i % 10 == 0:
            assert outcome.status is RunStatus.FAILED and outcome.error, outcome
        else:
            assert outcome.ok, outcome
            assert outcome.result is not None and outcome.result.text == f"echo: q{i}"
    assert result.counts == {"completed": 180, "failed": 20}
    # each run: its thread, then its run created with stream: true, whose events carried
    # the end and the reply (no polls, no messages list)
    sent = Counter((r.method, r.route.rsplit("/", 1)[-1]) for r in emulator.requests)
    assert sent == {("POST", "threads"): 200, ("POST", "runs"): 200}, sent
    runs = batch_runs(emulator, batch_key)
    assert len(runs) == 200
    assert Counter(r["metadata"][METADATA_ITEM_KEY] for r in runs).most_common(1)[0][1] == 1


async def test_the_default_bounds_stream_every_run_with_more_alive_than_requests(
    batch_key: str,
) -> None:
    """run_batch's defaults (32 requests in flight, 256 runs alive): every run is watched
    on its create's stream, and the connection pool holds the streams as well as the
    requests: more runs are alive at once than the old pool's 48 connections allowed."""
    import json

    from prefect_agent_runs.flows._execute import CONCURRENCY_HEADROOM

    n = 150
    script = {"metadata": {"emulator": json.dumps({"seconds": 3.0})}}
    requests = [r.model_copy(update=script) for r in echo_requests(n)]
    with AssistantsEmulator(run_seconds=1.0, poll_after_ms=None, compress_streams=False) as emu:
        credentials = AssistantsCredentials(base_url=emu.base_url, api_key="sk-test-key")
        result = await run_batch(credentials, requests, batch_key=batch_key)
        assert [o.key for o in result.completed] == [f"item-{i}" for i in range(n)]
        assert all(
            o.result is not None and o.result.text == f"echo: q{i}"
            for i, o in enumerate(result.outcomes)
        )
        sent = Counter((r.method, r.route.rsplit("/", 1)[-1]) for r in emu.requests)
        assert sent == {("POST", "threads"): n, ("POST", "runs"): n}, sent
        # runs alive at once, by the emulator's own clock (created .. scripted end)
        spans = [
            (r.t0, r.t0 + r.script.queue_seconds + r.script.seconds) for r in emu._runs.values()
        ]
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    alive = peak = 0
    for _, step in edges:
        alive += step
        peak = max(peak, alive)
    assert peak > 32 + CONCURRENCY_HEADROOM, peak


async def test_rerun_with_the_same_batch_key_starts_nothing_twice(
    emulator: AssistantsEmulator, batch_key: str
) -> None:
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test-key")
    first = await run_batch(credentials, echo_requests(30), batch_key=batch_key)
    assert len(first.completed) == 30
    creates_before = sum(
        1 for r in emulator.requests if r.method == "POST" and r.path.endswith("/runs")
    )

    again = await run_batch(credentials, echo_requests(30), batch_key=batch_key)
    creates_after = sum(
        1 for r in emulator.requests if r.method == "POST" and r.path.endswith("/runs")
    )
    assert creates_after == creates_before, "the rerun created runs"
    assert all(o.resumed and o.ok for o in again.outcomes)
    assert [o.run.id for o in again.outcomes if o.run] == [
        o.run.id for o in first.outcomes if o.run
    ]
    assert len(batch_runs(emulator, batch_key)) == 30


async def test_a_flaky_server_fails_no_item_and_duplicates_nothing(
    emulator: AssistantsEmulator, batch_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Faults AFTER the handler (issue 13): the run exists and its answer is lost, so a
    # client that blindly resent creates would duplicate. (A 429 means "not processed":
    # it stays out of after-commit faults.) The lookup window is shortened for CI.
    from prefect_agent_runs.backends import create

    monkeypatch.setattr(create, "LOOKUP_WINDOW_SECONDS", 2.0)
    emulator.inject_faults(
        rate=0.2, statuses=(500, 502, 503), retry_after=0.01, seed=7, after_commit=True
    )
    credentials = AssistantsCredentials(
        base_url=emulator.base_url, api_key="sk-test-key", max_retries=6
    )
    result = await run_batch(
        credentials, echo_requests(60), batch_key=batch_key, max_concurrency=16
    )
    emulator.clear_faults()
    failed = [(o.key, o.error) for o in result.outcomes if not o.ok]
    assert not failed, failed[:3]
    runs = batch_runs(emulator, batch_key)
    keys = Counter(r["metadata"][METADATA_ITEM_KEY] for r in runs)
    assert len(keys) == 60 and max(keys.values()) == 1, "an item was started twice"
    faults = sum(1 for r in emulator.requests if r.fault)
    assert faults > 20, f"only {faults} faults were injected"
