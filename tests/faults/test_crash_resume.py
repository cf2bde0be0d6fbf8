"""Crash and resume (issue 13, item 3): SIGKILL a process running ``run_batch``, rerun.

Per backend, ten child processes each run a batch of their own; five are killed with
SIGKILL during creation and five during waiting, each at an instant drawn from a seeded
RNG (relative to what the server shows of that batch: its first run for creation, its
last create for waiting). Each batch is then rerun in this process with the same
``batch_key`` and the same items, and the server is asked (directly, not through the code
under test) how many threads and runs every key has.

* LangGraph: the thread id is ours (uuid5 of batch key and item key) and the rerun looks
  threads up by the batch's metadata, so **no duplicate**, whatever the instant.
* Assistants: a run cannot be looked up by our key, so a run whose create was in flight
  at the kill (sent, the ledger's ``creating`` record written, its answer not yet
  recorded) is unknown to the rerun and started again. The bound: **duplicates <= the
  creates in flight at the kill**, at most one extra run per such key, none for any other
  key. To make the window real, the emulator commits each run create and answers it 0.3 s
  later, so a kill during creation always catches creates whose run exists.

Every item must end with an outcome, completed with the right reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from _harness import ServerCount, assistants_count, langgraph_count
from _procs import child_env, script, tail
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from prefect_agent_runs import AssistantsCredentials, LangGraphCredentials
from prefect_agent_runs.flows import run_batch
from prefect_agent_runs.flows._ledger import BatchLedger
from prefect_agent_runs.models import METADATA_BATCH_KEY, BatchResult
from prefect_agent_runs.testing import AssistantsEmulator
from prefect_agent_runs.testing._process import end_group
from prefect_agent_runs.testing._process import spawn as spawn_group
from prefect_agent_runs.testing.langgraph_dev import LangGraphDevServer

pytestmark = pytest.mark.usefixtures("prefect_harness")

SEED = 1313
KILLS = 5
API_KEY_ENV = "CRASH_TEST_API_KEY"
CREATE_ANSWER_DELAY = 0.3
"""Assistants: seconds between committing a run create and answering it."""


@dataclass
class Scenario:
    """One child: its batch, when it was killed, and what the server held then."""

    phase: str  # "creation" or "waiting"
    batch_key: str
    config: dict[str, Any]
    delay: float  # seconds after the trigger
    log: Path
    pid: int | None = None
    triggered_at: float | None = None
    killed: bool = False
    late: float = 0.0  # how much later than its instant the kill was sent
    runs_at_kill: int = 0
    active_at_kill: int = 0
    in_flight: set[str] = field(default_factory=set)
    result: BatchResult | None = None
    count: ServerCount | None = None


@dataclass
class Backend:
    name: str
    base_url: str
    credentials: Callable[[], Any]
    count: Callable[[str], ServerCount]
    active: Callable[[str], int]
    progress: Callable[[str], int]  # cheap: how many items have a run (or a thread) yet
    creation: dict[str, Any]
    waiting: dict[str, Any]
    expected_text: Callable[[int], str] = lambda i: f"echo: q{i}"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Path]:
    """Result storage shared by the children and the reruns here (the batch ledgers)."""
    path = tmp_path / "storage"
    path.mkdir()
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: path}):
        yield path


def _items(config: dict[str, Any]) -> list[dict[str, Any]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("batch_child", script("batch_child.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    items: list[dict[str, Any]] = module.items(config)
    return items


def _run_scenarios(backend: Backend, storage: Path, tmp_path: Path) -> list[Scenario]:
    """Start the ten children, kill each at its instant, return them (all dead)."""
    rng = random.Random(f"{SEED}-{backend.name}")
    scenarios: list[Scenario] = []
    for phase, template, window in (
        ("creation", backend.creation, backend.creation["kill_window"]),
        ("waiting", backend.waiting, backend.waiting["kill_window"]),
    ):
        for i in range(KILLS):
            key = f"crash-{backend.name[:4]}-{phase[:4]}-{i}-{uuid.uuid4().hex[:6]}"
            config = {k: v for k, v in template.items() if k != "kill_window"}
            config.update(backend=backend.name, base_url=backend.base_url, batch_key=key)
            scenarios.append(
                Scenario(
                    phase=phase,
                    batch_key=key,
                    config=config,
                    delay=rng.uniform(0.0, window),
                    log=tmp_path / f"{key}.log",
                )
            )
    env = child_env(PREFECT_LOCAL_STORAGE_PATH=str(storage), **{API_KEY_ENV: "sk-crash-test"})
    zygote = spawn_group(  # its own process group: the forked children are in it too
        [sys.executable, script("batch_child.py"), "--zygote"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    try:
        assert zygote.stdout.readline().strip() == "READY"
        lock = threading.Lock()

        def spawn(s: Scenario) -> None:
            assert zygote.stdin is not None and zygote.stdout is not None
            with lock:
                zygote.stdin.write(f"{json.dumps(s.config)}\t{s.log}\n")
                zygote.stdin.flush()
                answer = zygote.stdout.readline().split()
            assert answer[:1] == ["PID"], answer
            s.pid = int(answer[1])

        _kill_each(backend, scenarios, spawn)
    finally:
        zygote.stdin.close()
        end_group(zygote, grace=0)  # the zygote and any child of it still running
    return scenarios


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_each(
    backend: Backend, scenarios: list[Scenario], spawn: Callable[[Scenario], None]
) -> None:
    """One watcher thread per child: each starts its child once the previous one shows
    progress (ten flow runs created at once stall Prefect's SQLite test server), and kills
    it at its own instant."""
    ready = [threading.Event() for _ in scenarios]
    with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
        futures = [
            pool.submit(_watch_and_kill, backend, s, spawn, ready[i - 1] if i else None, ready[i])
            for i, s in enumerate(scenarios)
        ]
        for future in futures:
            future.result()


def _watch_and_kill(
    backend: Backend,
    s: Scenario,
    spawn: Callable[[Scenario], None],
    after: threading.Event | None,
    triggered: threading.Event,
) -> None:
    try:
        if after is not None:
            after.wait(timeout=180)
        spawn(s)
        _watch(backend, s, triggered)
    finally:
        triggered.set()


def _watch(backend: Backend, s: Scenario, triggered: threading.Event) -> None:
    assert s.pid is not None
    n = int(s.config["n"])
    deadline = time.monotonic() + 120
    while s.triggered_at is None:
        if time.monotonic() > deadline:
            os.kill(s.pid, signal.SIGUSR1)  # faulthandler: the child's stacks into its log
            time.sleep(1)
            raise AssertionError(f"{s.batch_key}: no progress in 120 s\n{tail(s.log, 200)}")
        assert _alive(s.pid), f"{s.batch_key} ({s.phase}) exited before its kill:\n{tail(s.log)}"
        runs = backend.progress(s.batch_key)
        if (s.phase == "creation" and runs >= 1) or (s.phase == "waiting" and runs >= n):
            s.triggered_at = time.monotonic()
            triggered.set()
        else:
            time.sleep(0.05)
    time.sleep(max(0.0, s.triggered_at + s.delay - time.monotonic()))  # the drawn instant
    assert _alive(s.pid), f"{s.batch_key} ({s.phase}) exited before its kill:\n{tail(s.log)}"
    s.late = time.monotonic() - (s.triggered_at + s.delay)
    os.kill(s.pid, signal.SIGKILL)
    while _alive(s.pid):  # reaped by the kernel (the zygote ignores SIGCHLD)
        time.sleep(0.005)
    s.killed = True
    s.runs_at_kill = sum(backend.count(s.batch_key).runs_by_key.values())
    s.active_at_kill = backend.active(s.batch_key)


async def _rerun(backend: Backend, scenarios: list[Scenario]) -> None:
    async def one(s: Scenario) -> None:
        ledger = await BatchLedger(s.batch_key).load()
        s.in_flight = set(ledger.in_flight)
        s.result = await run_batch(
            backend.credentials(),
            _items(s.config),
            batch_key=s.batch_key,
            max_concurrency=16,
        )
        s.count = backend.count(s.batch_key)

    # one after the other: ten flow runs created at once get 503s from Prefect's SQLite
    # test server on a loaded machine
    for s in scenarios:
        await one(s)


def _check_outcomes(backend: Backend, s: Scenario) -> None:
    assert s.result is not None and s.count is not None
    n = int(s.config["n"])
    by_key = {o.key: o for o in s.result.outcomes}
    assert sorted(by_key) == sorted(f"item-{i}" for i in range(n)), s.batch_key
    for i in range(n):
        outcome = by_key[f"item-{i}"]
        assert outcome.ok, (s.batch_key, outcome.key, outcome.status, outcome.error)
        assert outcome.result is not None and outcome.result.text == backend.expected_text(i)
        assert s.count.runs_by_key[f"item-{i}"] >= 1, (s.batch_key, outcome.key)


def _extra_runs(count: ServerCount) -> int:
    return sum(n - 1 for n in count.runs_by_key.values() if n > 1)


def _report(backend: Backend, scenarios: list[Scenario], seconds: float, kills: float) -> None:
    print(
        f"\n[crash] {backend.name}: {len(scenarios)} SIGKILLs (seed {SEED}) done after "
        f"{kills:.1f} s, reruns done after {seconds:.1f} s"
    )
    print(
        "| phase | batch | n | kill after | runs at kill | active at kill | in flight | dups | late |"
    )
    for s in scenarios:
        assert s.count is not None
        print(
            f"| {s.phase} | {s.batch_key} | {s.config['n']} | {s.delay:.2f} s | {s.runs_at_kill} "
            f"| {s.active_at_kill} | {len(s.in_flight)} | {_extra_runs(s.count)} | {s.late:.2f} |"
        )


# -- LangGraph: the real Agent Server --------------------------------------------------


def _langgraph_threads(base_url: str, batch_key: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        threads: list[dict[str, Any]] = http.post(
            "/threads/search",
            json={"metadata": {METADATA_BATCH_KEY: batch_key}, "limit": 500},
        ).json()
    return threads


def test_sigkill_and_resume_langgraph(
    langgraph_server: LangGraphDevServer, storage: Path, tmp_path: Path
) -> None:
    url = langgraph_server.base_url
    backend = Backend(
        name="langgraph",
        base_url=url,
        credentials=lambda: LangGraphCredentials(base_url=url),
        count=langgraph_count(url),
        active=lambda key: sum(t["status"] == "busy" for t in _langgraph_threads(url, key)),
        progress=lambda key: len(_langgraph_threads(url, key)),
        # one create at a time: a create is (almost) always in flight during creation; 90
        # of them, so that the 0.6 s window ends mid-creation on a quiet machine too (30
        # were all made within it in 3 of 5 batches in a quiet CI: ~15 ms per create)
        creation={"n": 90, "sleep": 0.0, "max_concurrency": 1, "kill_window": 0.6},
        waiting={"n": 6, "sleep": 8.0, "max_concurrency": 6, "kill_window": 3.0},
    )
    started = time.monotonic()
    scenarios = _run_scenarios(backend, storage, tmp_path)
    killed = time.monotonic()
    asyncio.run(_rerun(backend, scenarios))
    _report(backend, scenarios, time.monotonic() - started, killed - started)
    for s in scenarios:
        _check_outcomes(backend, s)
        assert s.count is not None
        assert s.count.duplicates() == 0, (s.batch_key, s.count)
        assert all(v == 1 for v in s.count.threads_by_key.values()), s.count.threads_by_key
    creation = [s for s in scenarios if s.phase == "creation"]
    waiting = [s for s in scenarios if s.phase == "waiting"]
    # the kills landed where they were meant to: creation left items to create, waiting
    # left runs going
    assert sum(s.runs_at_kill < int(s.config["n"]) for s in creation) >= KILLS - 1, [
        s.runs_at_kill for s in creation
    ]
    assert all(s.active_at_kill > 0 for s in waiting), [s.active_at_kill for s in waiting]


# -- Assistants: the emulator -------------------------------------------------------------


@pytest.fixture
def slow_create_emulator() -> Iterator[AssistantsEmulator]:
    # streams in scripted time: the waiting scenario's runs last their 8 s when streamed too
    with AssistantsEmulator(run_seconds=0.05, poll_after_ms=50, compress_streams=False) as emu:
        emu.inject_faults(
            rate=1.0,
            statuses=(),
            delay_seconds=CREATE_ANSWER_DELAY,
            paths=["/threads/*/runs"],
            methods=["POST"],
            after_commit=True,
        )
        yield emu


def test_sigkill_and_resume_assistants(
    slow_create_emulator: AssistantsEmulator, storage: Path, tmp_path: Path
) -> None:
    emu = slow_create_emulator

    def active(batch_key: str) -> int:
        return sum(
            1
            for r in emu.runs()
            if (r.get("metadata") or {}).get(METADATA_BATCH_KEY) == batch_key
            and r["status"] in ("queued", "in_progress")
        )

    backend = Backend(
        name="openai_assistants",
        base_url=emu.base_url,
        credentials=lambda: AssistantsCredentials(base_url=emu.base_url, api_key="sk-crash-test"),
        count=assistants_count(emu),
        active=active,
        progress=lambda key: sum(assistants_count(emu)(key).runs_by_key.values()),
        creation={"n": 24, "sleep": 0.05, "max_concurrency": 4, "kill_window": 1.2},
        waiting={"n": 6, "sleep": 8.0, "max_concurrency": 6, "kill_window": 3.0},
    )
    started = time.monotonic()
    scenarios = _run_scenarios(backend, storage, tmp_path)
    killed = time.monotonic()
    asyncio.run(_rerun(backend, scenarios))
    _report(backend, scenarios, time.monotonic() - started, killed - started)
    total_in_flight = 0
    for s in scenarios:
        _check_outcomes(backend, s)
        assert s.count is not None
        total_in_flight += len(s.in_flight)
        # the bound: an extra run only for a key whose create was in flight, at most one
        for key, runs in s.count.runs_by_key.items():
            assert runs <= (2 if key in s.in_flight else 1), (s.batch_key, key, runs, s.in_flight)
        assert _extra_runs(s.count) <= len(s.in_flight), (s.batch_key, s.count, s.in_flight)
    creation = [s for s in scenarios if s.phase == "creation"]
    waiting = [s for s in scenarios if s.phase == "waiting"]
    # the kills landed in the window that matters: creates in flight with their run made
    assert sum(1 for s in creation if s.in_flight) >= KILLS - 1, [
        len(s.in_flight) for s in creation
    ]
    assert all(s.active_at_kill > 0 for s in waiting), [s.active_at_kill for s in waiting]
