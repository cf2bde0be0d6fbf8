"""One contender on one workload, in its own process; prints a JSON line of measurements.

``python -m benchmarks.contenders --backend langgraph --contender sdk --url URL --n 1000
--concurrency 64 --out result.json`` (benchmarks/run.py calls it; run it by hand to profile
one contender, e.g. under ``pyinstrument``).

Contenders (``--contender``):

* ``run_batch``: ``prefect_agent_runs.flows.arun_batch`` in a Prefect flow run (results
  collected), after a warm-up flow that measures Prefect's cold start;
* ``engine``: the batch engine alone, ``prefect_agent_runs.batch.run_items`` (no Prefect);
* ``sdk``: the script users write with the official SDK, a semaphore only around the
  creates. LangGraph: ``langgraph_sdk`` threads.create + runs.create + runs.join (the join
  answers the thread's values). Assistants: ``openai`` create_and_run + runs.poll (the SDK's
  own interval) + messages.list for the run;
* ``poll2s``: seed 003's recipe: create, then GET the run every 2 s, then read the result;
* ``task_per_poll``: the prefect-dbt / prefect-databricks pattern: one Prefect task per
  create, one status task per 2 s poll, one task for the result, in one flow.

Every HTTP request the process sends to the server is counted at ``httpx`` (retries
included). "Seen" is when the contender learned that a run ended (wall clock), for the
detection lag against the server's own end time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import json
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from benchmarks.server_gc.gcclock import GcClock

GRAPH_ID = "echo"
ASSISTANT_ID = "asst_bench"
POLL_SECONDS = 2.0
LANGGRAPH_TERMINAL = {"success", "error", "timeout", "interrupted"}
ASSISTANTS_TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}


class Probe:
    """Counts requests to one server and records when each run was seen ending."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.netloc = parts.netloc
        self.requests = 0
        self.seen: dict[str, float] = {}
        self.errors: list[str] = []
        probe = self
        original_async = httpx.AsyncClient.send
        original_sync = httpx.Client.send

        async def counted_async(
            client: httpx.AsyncClient, request: httpx.Request, **kw: Any
        ) -> Any:
            if request.url.netloc.decode() == probe.netloc:
                probe.requests += 1
            return await original_async(client, request, **kw)

        def counted_sync(client: httpx.Client, request: httpx.Request, **kw: Any) -> Any:
            if request.url.netloc.decode() == probe.netloc:
                probe.requests += 1
            return original_sync(client, request, **kw)

        httpx.AsyncClient.send = counted_async  # type: ignore[method-assign]
        httpx.Client.send = counted_sync  # type: ignore[method-assign]

    def saw(self, run_id: str) -> None:
        self.seen[run_id] = time.time()

    def error(self, text: str) -> None:
        if len(self.errors) < 5:
            self.errors.append(text[:300])


def lg_input(i: int, sleep: float) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"item {i}"}], "sleep_seconds": sleep}


def emu_seconds(i: int) -> float:
    """The scripted length of emulator run ``i``: 0.5-2 s, the same for every contender."""
    return round(random.Random(i).uniform(0.5, 2.0), 3)


def emu_metadata(i: int) -> dict[str, str]:
    return {"emulator": json.dumps({"seconds": emu_seconds(i)})}


async def gather_bounded_creates(
    n: int,
    concurrency: int,
    create: Callable[[int], Awaitable[Any]],
    rest: Callable[[int, Any], Awaitable[None]],
) -> None:
    """The SDK-script shape: at most ``concurrency`` creates in flight, waits unbounded."""
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            created = await create(i)
        await rest(i, created)

    await asyncio.gather(*(one(i) for i in range(n)))


# -- official SDK scripts and seed 003's recipe -------------------------------------------


async def langgraph_sdk_script(probe: Probe, a: argparse.Namespace, poll: bool) -> None:
    from langgraph_sdk import get_client

    client = get_client(url=a.url, timeout=httpx.Timeout(600.0, connect=30.0))

    async def create(i: int) -> tuple[str, str]:
        thread = await client.threads.create()
        run = await client.runs.create(thread["thread_id"], GRAPH_ID, input=lg_input(i, a.sleep))
        return thread["thread_id"], run["run_id"]

    async def rest(i: int, ids: tuple[str, str]) -> None:
        tid, rid = ids
        if poll:
            while True:
                await asyncio.sleep(POLL_SECONDS)
                run = await client.runs.get(tid, rid)
                if run["status"] in LANGGRAPH_TERMINAL:
                    break
            probe.saw(rid)
            await client.threads.get_state(tid)  # the result
        else:
            await client.runs.join(tid, rid)  # answers the thread's values: the result
            probe.saw(rid)

    await gather_bounded_creates(a.n, a.concurrency, create, rest)


async def openai_sdk_script(probe: Probe, a: argparse.Namespace, poll: bool) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=a.url, api_key="bench", max_retries=2, timeout=600.0)
    threads = client.beta.threads

    async def create(i: int) -> Any:
        return await threads.create_and_run(
            assistant_id=ASSISTANT_ID,
            thread={"messages": [{"role": "user", "content": f"item {i}"}]},
            metadata=emu_metadata(i),
        )

    async def rest(i: int, run: Any) -> None:
        if poll:
            while run.status not in ASSISTANTS_TERMINAL:
                await asyncio.sleep(POLL_SECONDS)
                run = await threads.runs.retrieve(run.id, thread_id=run.thread_id)
        else:
            run = await threads.runs.poll(run.id, thread_id=run.thread_id)
        probe.saw(run.id)
        await threads.messages.list(thread_id=run.thread_id, run_id=run.id)

    await gather_bounded_creates(a.n, a.concurrency, create, rest)
    await client.close()


# -- ours ---------------------------------------------------------------------------------


def our_requests(a: argparse.Namespace, batch_key: str | None) -> list[Any]:
    from prefect_agent_runs.models import METADATA_BATCH_KEY, METADATA_ITEM_KEY, RunRequest

    out = []
    for i in range(a.n):
        meta: dict[str, Any] = {}
        if batch_key is not None:  # what run_batch adds (prepare_requests)
            meta = {METADATA_BATCH_KEY: batch_key, METADATA_ITEM_KEY: str(i)}
        if a.backend == "langgraph":
            out.append(
                RunRequest(
                    key=str(i), assistant_id=GRAPH_ID, input=lg_input(i, a.sleep), metadata=meta
                )
            )
        else:
            out.append(
                RunRequest(
                    key=str(i),
                    assistant_id=ASSISTANT_ID,
                    message=f"item {i}",
                    metadata={**meta, **emu_metadata(i)},
                )
            )
    return out


def credentials(a: argparse.Namespace) -> Any:
    from prefect_agent_runs.blocks import AssistantsCredentials, LangGraphCredentials

    if a.backend == "langgraph":
        return LangGraphCredentials(base_url=a.url)
    return AssistantsCredentials(base_url=a.url, api_key="bench")


def engine_kwargs(fn: Callable[..., Any], a: argparse.Namespace) -> dict[str, Any]:
    """Engine options a fresh batch uses, as far as this version of run_items has them."""
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {}
    if "max_active_runs" in params:
        kwargs["max_active_runs"] = None if a.backend == "langgraph" else a.concurrency
    if "fresh" in params:
        kwargs["fresh"] = True
    return kwargs


async def engine(probe: Probe, a: argparse.Namespace) -> None:
    from prefect_agent_runs.batch import run_items

    creds = credentials(a)
    kwargs = engine_kwargs(run_items, a)
    try:  # the pool run_batch builds: requests in flight, plus the streams of runs alive
        from prefect_agent_runs.flows._execute import connections_needed
    except ImportError:
        connections = a.concurrency + 16
    else:
        connections = connections_needed(
            creds, "batch", a.concurrency, kwargs.get("max_active_runs", "default")
        )
    client = creds.get_client(max_concurrency=connections)

    def outcome(o: Any) -> None:
        if o.run is not None:
            probe.saw(o.run.id)
        if o.error:
            probe.error(o.error)

    async with client:
        await run_items(
            client,
            our_requests(a, f"bench-{uuid.uuid4().hex[:12]}"),
            policy=client.policy,
            max_concurrency=a.concurrency,
            on_outcome=outcome,
            **kwargs,
        )


def patch_outcomes(probe: Probe) -> None:
    """Record when run_batch's engine reports each outcome (wraps run_items' on_outcome)."""
    import prefect_agent_runs.batch as batch_module
    import prefect_agent_runs.flows._execute as flows_module

    original = batch_module.run_items

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        inner = kwargs.get("on_outcome")

        async def on_outcome(o: Any) -> None:
            if o.run is not None:
                probe.saw(o.run.id)
            if o.error:
                probe.error(o.error)
            if inner is not None:
                result = inner(o)
                if inspect.isawaitable(result):
                    await result

        kwargs["on_outcome"] = on_outcome
        return await original(*args, **kwargs)

    for module in (batch_module, flows_module):
        if getattr(module, "run_items", None) is original:
            module.run_items = wrapped  # type: ignore[attr-defined]


async def prefect_counts(flow_run_id: Any) -> tuple[int, int]:
    """(log records, task runs) of one flow run, read back from the Prefect API.

    Prefect records task runs from events and ships logs in the background, so the counts
    are read until they stop changing.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])).model_dump(mode="json")
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    last: tuple[int, int] | None = None
    async with get_client() as client:
        for _ in range(60):
            logs = 0
            while True:
                page = await client.read_logs(log_filter=log_filter, limit=200, offset=logs)
                logs += len(page)
                if len(page) < 200:
                    break
            response = await client._client.post(
                "/task_runs/count", json={"flow_runs": flow_filter}
            )
            counts = (logs, int(response.json()))
            if counts == last:
                break
            last = counts
            await asyncio.sleep(2.0)
    assert last is not None
    return last


async def prefect_cold_start() -> float:
    from prefect import flow

    @flow(name="bench-warm-up")
    async def warm_up() -> None:
        return None

    started = time.perf_counter()
    await warm_up()
    return time.perf_counter() - started


async def run_batch(probe: Probe, a: argparse.Namespace, extra: dict[str, Any]) -> None:
    from prefect_agent_runs.flows import arun_batch

    patch_outcomes(probe)
    requests = our_requests(a, None)
    params = inspect.signature(arun_batch.fn).parameters
    kwargs: dict[str, Any] = {"max_concurrency": a.concurrency}
    if "max_active_runs" in params:
        kwargs["max_active_runs"] = None if a.backend == "langgraph" else a.concurrency
    state = await arun_batch(credentials(a), requests, return_state=True, **kwargs)
    result = await state.result()
    bad = [o for o in result.outcomes if o.error]
    for o in bad[:5]:
        probe.error(o.error)
    extra["flow_run_id"] = state.state_details.flow_run_id  # counted after the clock stops


async def task_per_poll(probe: Probe, a: argparse.Namespace, extra: dict[str, Any]) -> None:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    if a.backend == "langgraph":
        from langgraph_sdk import get_client

        lg = get_client(url=a.url, timeout=httpx.Timeout(600.0, connect=30.0))

        @task(name="trigger-run", cache_policy=NO_CACHE, persist_result=False)
        async def trigger(i: int) -> tuple[str, str, str]:
            thread = await lg.threads.create()
            run = await lg.runs.create(thread["thread_id"], GRAPH_ID, input=lg_input(i, a.sleep))
            return thread["thread_id"], run["run_id"], run["status"]

        @task(name="get-run-status", cache_policy=NO_CACHE, persist_result=False)
        async def status(tid: str, rid: str) -> str:
            return str((await lg.runs.get(tid, rid))["status"])

        @task(name="fetch-result", cache_policy=NO_CACHE, persist_result=False)
        async def result(tid: str, rid: str) -> None:
            await lg.threads.get_state(tid)

        terminal = LANGGRAPH_TERMINAL
    else:
        import openai

        oa = openai.AsyncOpenAI(base_url=a.url, api_key="bench", max_retries=2, timeout=600.0)

        @task(name="trigger-run", cache_policy=NO_CACHE, persist_result=False)
        async def trigger(i: int) -> tuple[str, str, str]:
            run = await oa.beta.threads.create_and_run(
                assistant_id=ASSISTANT_ID,
                thread={"messages": [{"role": "user", "content": f"item {i}"}]},
                metadata=emu_metadata(i),
            )
            return run.thread_id, run.id, run.status

        @task(name="get-run-status", cache_policy=NO_CACHE, persist_result=False)
        async def status(tid: str, rid: str) -> str:
            return str((await oa.beta.threads.runs.retrieve(rid, thread_id=tid)).status)

        @task(name="fetch-result", cache_policy=NO_CACHE, persist_result=False)
        async def result(tid: str, rid: str) -> None:
            await oa.beta.threads.messages.list(thread_id=tid, run_id=rid)

        terminal = ASSISTANTS_TERMINAL

    @flow(name="bench-task-per-poll")
    async def pattern() -> None:
        async def create(i: int) -> tuple[str, str, str]:
            return await trigger(i)

        async def rest(i: int, created: tuple[str, str, str]) -> None:
            tid, rid, st = created
            while st not in terminal:
                await asyncio.sleep(POLL_SECONDS)
                st = await status(tid, rid)
            probe.saw(rid)
            await result(tid, rid)

        await gather_bounded_creates(a.n, a.concurrency, create, rest)

    state = await pattern(return_state=True)
    await state.result()
    extra["flow_run_id"] = state.state_details.flow_run_id  # counted after the clock stops


# -- main ---------------------------------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's own peak resident set, in MB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this process's memory.
    Not ``ru_maxrss``: Linux carries it across ``execve``, so a contender started by a larger
    process reports that process's size (every row of the 7fd9d14 run showed the runner's
    ~195 MB). Elsewhere ``ru_maxrss`` is the best there is.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes there, KB here


def children_cpu_seconds() -> float:
    """CPU of our child processes that are alive (Prefect's temporary server)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


PRELOAD = {
    "sdk": ("langgraph_sdk", "openai"),
    "poll2s": ("langgraph_sdk", "openai"),
    "engine": ("prefect_agent_runs.batch", "prefect_agent_runs.blocks"),
    "run_batch": ("prefect_agent_runs.flows", "prefect_agent_runs.blocks"),
    "run_batch_temp": ("prefect_agent_runs.flows", "prefect_agent_runs.blocks"),
    "task_per_poll": ("prefect", "langgraph_sdk", "openai"),
}


async def measure(a: argparse.Namespace) -> dict[str, Any]:
    for module in PRELOAD.get(a.contender, ()):
        importlib.import_module(module)  # imports are not part of the measurement
    probe = Probe(a.url)
    extra: dict[str, Any] = {}
    uses_prefect = a.contender in ("run_batch", "run_batch_temp", "task_per_poll")
    if uses_prefect:
        extra["prefect_cold_start"] = await prefect_cold_start()
    probe.requests = 0
    gc_clock = GcClock()
    gc.callbacks.append(gc_clock)
    prefect_cpu0 = children_cpu_seconds()
    cpu0 = cpu_seconds()
    started = time.time()
    t0 = time.perf_counter()
    if a.contender == "sdk":
        if a.backend == "langgraph":
            await langgraph_sdk_script(probe, a, poll=False)
        else:
            await openai_sdk_script(probe, a, poll=False)
    elif a.contender == "poll2s":
        if a.backend == "langgraph":
            await langgraph_sdk_script(probe, a, poll=True)
        else:
            await openai_sdk_script(probe, a, poll=True)
    elif a.contender == "engine":
        await engine(probe, a)
    elif a.contender in ("run_batch", "run_batch_temp"):  # the Prefect server differs
        await run_batch(probe, a, extra)
    elif a.contender == "task_per_poll":
        await task_per_poll(probe, a, extra)
    else:
        raise SystemExit(f"unknown contender {a.contender}")
    wall = time.perf_counter() - t0
    requests = probe.requests
    client_cpu = cpu_seconds() - cpu0
    gc.callbacks.remove(gc_clock)
    peak_rss = peak_rss_mb()
    if uses_prefect:
        extra["prefect_server_cpu"] = children_cpu_seconds() - prefect_cpu0
        # read back after the measurement: the counts wait for Prefect's log shipping
        extra["prefect_logs"], extra["prefect_task_runs"] = await prefect_counts(
            extra.pop("flow_run_id")
        )
    return {
        "contender": a.contender,
        "backend": a.backend,
        "n": a.n,
        "started": started,
        "wall": wall,
        "client_cpu": client_cpu,
        "gc_seconds": gc_clock.seconds,
        "gc_full_collections": gc_clock.full,
        "peak_rss_mb": peak_rss,
        "requests": requests,
        "seen": probe.seen,
        "errors": probe.errors,
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["langgraph", "assistants"], required=True)
    parser.add_argument("--contender", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sleep", type=float, default=1.0, help="LangGraph run length (s)")
    parser.add_argument("--out", required=True)
    a = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    result = asyncio.run(measure(a))
    with open(a.out, "w", encoding="utf-8") as out:
        json.dump(result, out)
    print(
        f"{a.backend} {a.contender} n={a.n}: {result['wall']:.1f} s wall, "
        f"{result['requests']} requests, {result['client_cpu']:.1f} s CPU "
        f"(GC {result['gc_seconds']:.1f} s, {result['gc_full_collections']} full collections)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
