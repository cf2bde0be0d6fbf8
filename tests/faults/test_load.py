"""Load: 10,000 items through ``run_batch``, 256 in flight, 5 % of the requests faulted.

Issue 13 item 7 and issue 16's CI test in one: the Assistants emulator and the fault proxy
run in a process of their own (``scripts/load_server.py``); this process runs ``run_batch``
on the session's Prefect server with its default settings (the 512 KiB cap on flow-run
parameters included). It asserts:

* every item's outcome, exactly once and in order, with its reply (the scripted failures
  failed, naming their run);
* on the emulator's side (its own store, not through the code under test): one run and one
  thread per key, nothing more, each run the one its outcome names, in the same end state;
* the flow run's parameters, read back from the Prefect API, are under 16 KB;
* its table artifact holds every item in order, in pages whose Prefect events fit;
* faults were injected (every kind), and retried;
* the client process's peak RSS grows by at most :data:`RSS_GROWTH_BOUND_MB`.

Never timed: the wall time is printed (``-s``) and written in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from _harness import RETRY_MARKERS, new_batch_key
from _procs import child_env, script, tail
from _proxy import ALL_KINDS
from prefect.client.orchestration import get_client

from prefect_agent_runs import AssistantsCredentials, RunOutcome, RunStatus
from prefect_agent_runs.flows import artifact_keys, run_batch
from prefect_agent_runs.flows._artifacts import TABLE_PAGE_BYTES
from prefect_agent_runs.testing._process import end_group, spawn

pytestmark = pytest.mark.usefixtures("prefect_harness")

N = 10_000
IN_FLIGHT = 256
"""``max_concurrency`` (requests in flight) and ``max_active_runs`` (runs alive)."""
FAIL_EVERY = 500
"""Every 500th item is scripted to fail on the emulator (20 items)."""
FAULT_RATE = 0.05
REQUEST_TIMEOUT = 10.0
"""The client's read timeout. Shorter ones (2 s) are the emulator's own answer time on this
2-core machine under load: the test would measure a starved server, not the client."""
STALL = REQUEST_TIMEOUT + 2
"""A stalled answer is held past the read timeout."""
LOOKUP_WINDOW = 5.0
"""The create lookup window (30 s by default): no create is held late here (that case is
test_fault_batches'), and a create reset before it reached the server waits the window
before it is resent; 5 s keeps that wait out of the batch's tail."""
PARAMETER_LIMIT = 16 * 1024
RSS_GROWTH_BOUND_MB = 300
"""Issue 16's target for 10,000 items (peak RSS growth of this process during the batch)."""


class _LoadServer:
    """The child process: the emulator behind the proxy."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "load_server.log"
        config = {
            "rate": FAULT_RATE,
            "stall_seconds": STALL,
            "seed": 13,
            "run_seconds": 0.05,
            "poll_after_ms": 50,
        }
        with self.log.open("wb") as err:
            self.proc = spawn(
                [sys.executable, script("load_server.py"), json.dumps(config)],
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.base_url = self._expect("READY").split()[1]

    def _expect(self, word: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            raise AssertionError(
                f"load server: expected {word}, got {line!r} (exit {self.proc.poll()}):\n"
                + tail(self.log)
            )
        return line

    def count(self, batch_key: str, path: Path) -> dict[str, Any]:
        """What the emulator holds for the batch (see ``scripts/load_server.py``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"COUNT {batch_key} {path}\n")
        self.proc.stdin.flush()
        self._expect("COUNTED")
        counted: dict[str, Any] = json.loads(path.read_text())
        return counted

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the load server exits at the end of its input
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        end_group(self.proc, grace=0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def load_server(tmp_path: Path) -> Iterator[_LoadServer]:
    server = _LoadServer(tmp_path)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def short_lookup_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_agent_runs.backends import create

    monkeypatch.setattr(create, "LOOKUP_WINDOW_SECONDS", LOOKUP_WINDOW)


RETRY_LOGGERS = (
    "prefect_agent_runs.http",
    "prefect_agent_runs.create",
    "prefect_agent_runs.waiting",
)
"""Where the transport's retries, the create lookups and the wait's "look again" are logged."""


class _RetryCounter(logging.Filter):
    """Counts retry, lookup and "look again" records and drops them: thousands of lines
    would otherwise be kept by pytest's log capture (and count in the RSS measured)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(marker in message for marker in RETRY_MARKERS):
            self.count += 1
            return False
        return True


@pytest.fixture
def retries() -> Iterator[_RetryCounter]:
    counter = _RetryCounter()
    loggers = [logging.getLogger(name) for name in RETRY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
        lg.addFilter(counter)
    try:
        yield counter
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeFilter(counter)
            lg.setLevel(level)


class PeakRss:
    """Peak resident set growth of this process (Linux: VmHWM, reset at the start)."""

    def __init__(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.start_kb = self._field("VmRSS")

    @staticmethod
    def _field(name: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {name} in /proc/self/status")

    def growth_mb(self) -> float:
        return (self._field("VmHWM") - self.start_kb) / 1024


def cpu_seconds(load_server_pid: int) -> dict[str, float]:
    """CPU seconds so far of this process, of the load server and of the rest of this
    process's children (Prefect's test server)."""
    me = psutil.Process()
    out = {"client": sum(me.cpu_times()[:2]), "load server": 0.0, "prefect server": 0.0}
    for child in me.children(recursive=True):
        try:
            seconds = sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
        out["load server" if child.pid == load_server_pid else "prefect server"] += seconds
    return out


def items(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        item: dict[str, Any] = {"key": f"item-{i}", "assistant_id": "asst_echo", "message": f"q{i}"}
        if i % FAIL_EVERY == 0:
            item["metadata"] = {"emulator": json.dumps({"outcome": "failed"})}
        out.append(item)
    return out


async def test_10000_items_256_in_flight_with_5_percent_faults(
    load_server: _LoadServer,
    retries: _RetryCounter,
    tmp_path: Path,
) -> None:
    batch_key = new_batch_key("load")
    credentials = AssistantsCredentials(
        base_url=load_server.base_url,
        api_key="sk-load-test",
        request_timeout_seconds=REQUEST_TIMEOUT,
    )
    requests = items(N)
    cpu0 = cpu_seconds(load_server.proc.pid)
    rss = PeakRss()
    started = time.monotonic()
    state = await run_batch(
        credentials,
        requests,
        batch_key=batch_key,
        max_concurrency=IN_FLIGHT,
        max_active_runs=IN_FLIGHT,
        return_state=True,
    )
    wall = time.monotonic() - started
    growth = rss.growth_mb()
    cpu = {k: v - cpu0.get(k, 0.0) for k, v in cpu_seconds(load_server.proc.pid).items()}
    result = await state.result()
    server = load_server.count(batch_key, tmp_path / "count.json")
    async with get_client() as client:
        flow_run = await client.read_flow_run(state.state_details.flow_run_id)
        # the table artifact, in pages whose Prefect events fit (1.5 MB each at most)
        response = await client._client.post(
            "/artifacts/filter",
            json={
                "artifacts": {
                    "flow_run_id": {"any_": [str(flow_run.id)]},
                    "type": {"any_": ["table"]},
                },
                "sort": "KEY_ASC",
                "limit": 200,
            },
        )
        response.raise_for_status()
        tables = {a["key"]: a for a in response.json()}
    parameters_size = len(json.dumps(flow_run.parameters, default=str).encode())

    wrong = [_judge(i, o) for i, o in enumerate(result.outcomes)]
    wrong = [w for w in wrong if w is not None]
    runs = server["runs"]
    per_key = Counter(r["key"] for r in runs)
    duplicates = sum(n - 1 for n in per_key.values())
    no_run = N - len(per_key)
    faults = {k: v for k, v in server["proxy"].items() if k != "none"}
    injected = sum(faults.values())
    proxied = injected + server["proxy"].get("none", 0)
    print(
        f"\nload: {N} items in {wall:.1f} s, peak RSS +{growth:.0f} MB, {proxied} requests "
        f"({proxied / N:.2f} per item), {injected} faults {faults}, {retries.count} retry or "
        f"lookup records, {len(wrong)} wrong outcomes, {no_run} items without a run, "
        f"{duplicates} duplicate runs, {server['threads_without_run']} threads without a run, "
        f"parameters {parameters_size} bytes, {server['upstream_errors']} proxy upstream errors; "
        f"CPU s: {', '.join(f'{k} {v:.1f}' for k, v in cpu.items())}"
    )

    # -- every item, exactly once, in order, right ---------------------------------------
    assert [o.key for o in result.outcomes] == [f"item-{i}" for i in range(N)]
    assert not wrong, f"{len(wrong)} wrong outcomes, e.g. {wrong[:5]}"
    failed = len(range(0, N, FAIL_EVERY))
    assert state.message == f"{N - failed} completed, {failed} failed"

    # -- on the emulator: one run and one thread per key, the outcome's own run ----------
    assert no_run == 0 and set(per_key) == {o.key for o in result.outcomes}
    assert duplicates == 0, [k for k, n in per_key.items() if n > 1][:5]
    assert len({r["thread_id"] for r in runs}) == N, "two items share a thread"
    by_key = {r["key"]: r for r in runs}
    mismatched = [
        (o.key, o.run.id if o.run else None, by_key[o.key]["id"], by_key[o.key]["status"])
        for o in result.outcomes
        if o.run is None
        or o.run.id != by_key[o.key]["id"]
        or by_key[o.key]["status"] != o.run.raw_status
    ]
    assert not mismatched, mismatched[:5]
    replies = [r for r in runs if r["status"] == "completed"]
    assert len(replies) == N - failed
    assert all(r["reply"] == "echo: q" + r["key"].removeprefix("item-") for r in replies)

    # -- the flow run's parameters, read back from the API --------------------------------
    assert parameters_size < PARAMETER_LIMIT, parameters_size
    assert flow_run.parameters["requests"]["storage"] == "result"
    assert flow_run.parameters["requests"]["count"] == N

    # -- the table: every item once, in order, across pages that each fit an event ---------
    first = artifact_keys(batch_key)["table"]
    keys = [first] + [f"{first}-{page}" for page in range(2, len(tables) + 1)]
    assert sorted(tables) == sorted(keys) and len(keys) >= 2, sorted(tables)
    rows = [row for key in keys for row in json.loads(tables[key]["data"])]
    assert [row["key"] for row in rows] == [o.key for o in result.outcomes]
    assert [row["status"] for row in rows] == [o.status.value for o in result.outcomes]
    assert max(len(json.dumps(t["data"])) for t in tables.values()) <= TABLE_PAGE_BYTES

    # -- faults were injected, of every kind, and retried ----------------------------------
    # ~2 requests per item cross the proxy (thread, streamed run create; polls and a
    # messages list only where a fault cut the stream): 5 % is ~1,000
    assert injected > 0.03 * 2 * N, faults
    assert set(faults) == {k.value for k in ALL_KINDS}, faults
    assert all(n >= 50 for n in faults.values()), faults
    assert retries.count > injected / 2, (retries.count, injected)
    # a bare thread whose answer was lost stays empty (docs/reliability.md "The bounds")
    assert server["threads_without_run"] <= injected

    # -- memory ----------------------------------------------------------------------------
    assert growth <= RSS_GROWTH_BOUND_MB, f"peak RSS grew by {growth:.0f} MB"


def _judge(i: int, outcome: RunOutcome) -> tuple[str, str, str | None] | None:
    """None when item ``i``'s outcome is right: its reply, or (scripted) a failure naming
    its run."""
    if i % FAIL_EVERY == 0:
        right = (
            outcome.status is RunStatus.FAILED
            and outcome.run is not None
            and outcome.run.id in (outcome.error or "")
        )
    else:
        right = outcome.ok and outcome.result is not None and outcome.result.text == f"echo: q{i}"
    return None if right else (outcome.key, outcome.status.value, outcome.error)
