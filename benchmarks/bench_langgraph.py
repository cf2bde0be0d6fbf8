"""Benchmark: N runs created and waited for on a real LangGraph Agent Server.

Contenders, run in alternation on fresh servers (the in-memory server slows down as it
accumulates threads, see ../shared/reference/langgraph-server.md):

* ``sdk``: the official ``langgraph_sdk`` (threads.create, runs.create, runs.join);
* ``sdk-poll``: the same with a fixed 2 s status poll instead of join (seed 003's recipe);
* ``ours``: ``LangGraphClient.create_run`` + ``wait_for_run`` (join) per run;
* ``ours-batch``: the batch engine ``run_items`` (create, join, read the result).

Usage: ``python benchmarks/bench_langgraph.py --runs 1000 --concurrency 64 --sleep 1``.
Prints a table (wall seconds, HTTP requests, requests per run, peak RSS). Never run in
tests; numbers go into the closing notes and docs.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from prefect_agent_runs.backends.langgraph import LangGraphClient
from prefect_agent_runs.batch import run_items
from prefect_agent_runs.models import RunRequest
from prefect_agent_runs.testing.langgraph_dev import LangGraphDevServer
from prefect_agent_runs.waiting import PollPolicy


def _input(i: int, sleep: float) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"item {i}"}], "sleep_seconds": sleep}


class _Counter(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1000))
        self.count = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        return await self.inner.handle_async_request(request)


async def _bounded(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> None:
        async with slots:
            await one(i)

    await asyncio.gather(*(guarded(i) for i in range(n)))


async def sdk(url: str, n: int, concurrency: int, sleep: float, poll: bool) -> int:
    from langgraph_sdk import get_client

    counter = _Counter()
    client = get_client(url=url)
    client.http.client._transport = counter  # count the SDK's requests

    async def one(i: int) -> None:
        thread = await client.threads.create()
        run = await client.runs.create(thread["thread_id"], "echo", input=_input(i, sleep))
        if poll:
            status = "pending"
            while status in ("pending", "running"):
                await asyncio.sleep(2)  # the fixed 2 s recipe of seed 003
                status = (await client.runs.get(thread["thread_id"], run["run_id"]))["status"]
        else:
            await client.runs.join(thread["thread_id"], run["run_id"])

    await _bounded(n, concurrency, one)
    return counter.count


async def ours(url: str, n: int, concurrency: int, sleep: float, batch: bool) -> int:
    counter = _Counter()
    http = httpx.AsyncClient(base_url=url, transport=counter, timeout=httpx.Timeout(60, pool=None))
    async with LangGraphClient(url, http_client=http, max_concurrency=concurrency) as client:
        requests = [
            RunRequest(key=str(i), assistant_id="echo", input=_input(i, sleep)) for i in range(n)
        ]
        if batch:
            outcomes = await run_items(
                client, requests, policy=PollPolicy(), max_concurrency=concurrency
            )
            bad = [o for o in outcomes if not o.ok]
            assert not bad, bad[:3]
        else:

            async def one(i: int) -> None:
                run = await client.create_run(requests[i])
                await client.wait_for_run(run)

            await _bounded(n, concurrency, one)
    await http.aclose()
    return counter.count


CONTENDERS: dict[str, Callable[[str, int, int, float], Awaitable[int]]] = {
    "sdk": lambda u, n, c, s: sdk(u, n, c, s, poll=False),
    "sdk-poll": lambda u, n, c, s: sdk(u, n, c, s, poll=True),
    "ours": lambda u, n, c, s: ours(u, n, c, s, batch=False),
    "ours-batch": lambda u, n, c, s: ours(u, n, c, s, batch=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", nargs="*", choices=sorted(CONTENDERS), default=sorted(CONTENDERS))
    args = parser.parse_args()
    rows = []
    for round_no in range(args.rounds):
        for name in args.only:
            with LangGraphDevServer(n_jobs_per_worker=64) as server:
                started = time.perf_counter()
                requests = asyncio.run(
                    CONTENDERS[name](server.base_url, args.runs, args.concurrency, args.sleep)
                )
                wall = time.perf_counter() - started
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append(
                (round_no + 1, name, args.runs, wall, requests, requests / args.runs, rss_mb)
            )
            print(f"round {round_no + 1} {name}: {wall:.1f}s, {requests} requests", flush=True)
    print()
    print("| round | contender | runs | wall s | requests | requests/run | peak RSS MB (process) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]} | {r[5]:.2f} | {r[6]:.0f} |")


if __name__ == "__main__":
    main()
