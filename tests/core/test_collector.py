"""The garbage collector while batches run (``_heap.py``) and the cycles we break (``_cycles.py``).

A batch of 10,000 runs makes some 200,000 requests. Each used to leave 72 objects in
reference cycles (httpx's response and its stream; tenacity's retrying object), which only
the cyclic collector frees; and at the default young threshold every in-flight request
reached the old generation. These tests hold both fixed: the real transport, on the real
(in-process) Assistants emulator and with a retried request, leaves no cycle of its own,
and a batch widens the young generation only while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import respx

from prefect_agent_runs import AssistantsCredentials, RunRequest
from prefect_agent_runs._heap import YOUNG_THRESHOLD
from prefect_agent_runs.batch import run_items
from prefect_agent_runs.http import RetryMode, Transport
from prefect_agent_runs.testing import AssistantsEmulator

OURS = ("httpx", "httpcore", "tenacity", "prefect_agent_runs.")
"""Modules of the client side (the emulator is ``prefect_agent_runs.testing``, left out)."""


def _client_side(objects: list[object]) -> Counter[str]:
    names: Counter[str] = Counter()
    for obj in objects:
        module = type(obj).__module__
        if module.startswith(OURS) and not module.startswith("prefect_agent_runs.testing"):
            names[f"{module}.{type(obj).__qualname__}"] += 1
    return names


@contextlib.contextmanager
def cycles_made() -> Iterator[list[object]]:
    """The objects that became cyclic garbage within the block (filled in at its end)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    start = len(gc.garbage)
    found: list[object] = []
    try:
        yield found
        gc.collect()
    finally:
        gc.set_debug(0)
        found.extend(gc.garbage[start:])
        del gc.garbage[start:]


async def test_a_batch_on_the_emulator_leaves_no_reference_cycle_of_ours(
    assistants_emulator: AssistantsEmulator,
) -> None:
    credentials = AssistantsCredentials(base_url=assistants_emulator.base_url, api_key="sk-x")
    requests = [
        RunRequest(key=f"item-{i}", assistant_id="asst_echo", message=f"q{i}") for i in range(40)
    ]
    with cycles_made() as garbage:
        async with credentials.get_client(max_concurrency=16) as client:
            outcomes = await run_items(
                client, requests, policy=client.policy, max_concurrency=16, fresh=True
            )
    assert [o.result.text for o in outcomes if o.result] == [f"echo: q{i}" for i in range(40)]
    assert _client_side(garbage) == {}


async def test_a_retried_request_leaves_no_reference_cycle() -> None:
    async def no_sleep(seconds: float) -> None:
        return None

    base = "https://api.example.test"
    with respx.mock(base_url=base) as router, cycles_made() as garbage:
        route = router.get("/things/1")
        async with Transport(backend="test", base_url=base, sleep=no_sleep) as transport:
            for _ in range(5):
                route.side_effect = [httpx.Response(503), httpx.Response(200, json={"ok": 1})]
                body = await transport.request_json(
                    "GET", "/things/1", action="get thing 1", mode=RetryMode.IDEMPOTENT
                )
                assert body == {"ok": 1}
            assert transport.stats.retries == 5 and transport.stats.requests == 10
    assert _client_side(garbage) == {}


async def test_a_batch_widens_the_young_generation_only_while_it_runs(
    assistants_emulator: AssistantsEmulator,
) -> None:
    credentials = AssistantsCredentials(base_url=assistants_emulator.base_url, api_key="sk-x")
    before = gc.get_threshold()
    assert before[0] < YOUNG_THRESHOLD
    during: list[tuple[int, int, int]] = []
    async with credentials.get_client(max_concurrency=4) as client:
        await run_items(
            client,
            [RunRequest(key=f"k{i}", assistant_id="asst_echo", message="q") for i in range(3)],
            policy=client.policy,
            on_outcome=lambda o: during.append(gc.get_threshold()),
        )
    assert during == [(YOUNG_THRESHOLD, before[1], before[2])] * 3
    assert gc.get_threshold() == before


async def test_a_threshold_the_process_set_is_respected(
    assistants_emulator: AssistantsEmulator,
) -> None:
    """Higher than ours: left as it is. Changed while the batch ran: not reset after."""
    credentials = AssistantsCredentials(base_url=assistants_emulator.base_url, api_key="sk-x")
    before = gc.get_threshold()
    requests = [RunRequest(key="k", assistant_id="asst_echo", message="q")]
    try:
        gc.set_threshold(100_000, before[1], before[2])
        seen: list[int] = []
        async with credentials.get_client(max_concurrency=4) as client:
            await run_items(
                client,
                requests,
                policy=client.policy,
                on_outcome=lambda o: seen.append(gc.get_threshold()[0]),
            )
        assert seen == [100_000] and gc.get_threshold()[0] == 100_000

        gc.set_threshold(*before)

        def change(_: object) -> None:
            gc.set_threshold(5_000, before[1], before[2])

        async with credentials.get_client(max_concurrency=4) as client:
            await run_items(client, requests, policy=client.policy, on_outcome=change)
        assert gc.get_threshold()[0] == 5_000
    finally:
        gc.set_threshold(*before)


def test_the_heap_is_left_as_it_was_after_two_overlapping_batches() -> None:
    """Two batches in one loop: frozen and widened once, put back once, at the last end."""
    from prefect_agent_runs._heap import batch_gc

    before = gc.get_threshold()

    async def batch(started: asyncio.Event, release: asyncio.Event) -> int:
        with batch_gc():
            started.set()
            await release.wait()
            return gc.get_threshold()[0]

    async def main() -> tuple[int, int, int]:
        a_started, b_started, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(batch(a_started, release))
        await a_started.wait()
        b = asyncio.create_task(batch(b_started, asyncio.Event()))
        await b_started.wait()
        release.set()
        first = await a  # b still runs: still wide
        middle = gc.get_threshold()[0]
        b.cancel()
        with pytest.raises(asyncio.CancelledError):
            await b
        return first, middle, gc.get_threshold()[0]

    assert asyncio.run(main()) == (YOUNG_THRESHOLD, YOUNG_THRESHOLD, before[0])
    assert gc.get_freeze_count() == 0
