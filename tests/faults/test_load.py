"""Load (issue 13, item 7): 10,000 runs through the Assistants emulator, 256 in flight, 5 %
of the requests faulted (all seven kinds) by the proxy: nothing lost, nothing duplicated,
memory bounded.

The emulator and the proxy run in a process of their own (``_load_server.py``), so the
peak RSS measured here is the client's: the batch engine, the transport and the outcomes.
The bound: the peak RSS grows by at most ``BYTES_PER_ITEM`` per item over the RSS before
the batch (Linux: the peak is reset through ``/proc/self/clear_refs`` first).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _harness import message_items, new_batch_key

from prefect_agent_runs import AssistantsCredentials
from prefect_agent_runs.flows import run_batch

pytestmark = pytest.mark.usefixtures("prefect_harness")

N = 10_000
IN_FLIGHT = 256
FAULT_RATE = 0.05
BYTES_PER_ITEM = 10_240
"""The memory bound: 10 KB of peak RSS growth per item (100 MB for 10,000)."""
LOOKUP_WINDOW = 2.5


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_10000_runs_256_in_flight_5_percent_faults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect_agent_runs.backends import create

    monkeypatch.setattr(create, "LOOKUP_WINDOW_SECONDS", LOOKUP_WINDOW)
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_load_server.py")), str(FAULT_RATE),
         "7", "2.5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert server.stdin is not None and server.stdout is not None
    try:
        url = json.loads(server.stdout.readline())["url"]
        credentials = AssistantsCredentials(
            base_url=url, api_key="sk-load", request_timeout_seconds=2.0
        )
        items = message_items(N, "asst_echo")
        batch_key = new_batch_key("load")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
        before = _rss_kb("VmRSS")
        started = time.monotonic()
        result = asyncio.run(
            run_batch(
                credentials,
                items,
                batch_key=batch_key,
                max_concurrency=IN_FLIGHT,
                max_active_runs=IN_FLIGHT,
            )
        )
        seconds = time.monotonic() - started
        peak = _rss_kb("VmHWM")
        server.stdin.write(f"count {batch_key}\n")
        server.stdin.flush()
        count = json.loads(server.stdout.readline())
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(30)
    runs_by_key: dict[str, int] = count["runs_by_key"]
    by_key = {o.key: o for o in result.outcomes}
    lost = [k for k in (f"item-{i}" for i in range(N)) if not (by_key.get(k) and by_key[k].ok)]
    wrong = [
        o.key
        for i, o in enumerate(result.outcomes)
        if o.ok and (o.result is None or o.result.text != f"echo: q{i}")
    ]
    duplicates = sum(n - 1 for n in runs_by_key.values() if n > 1)
    missing = N - len(runs_by_key)
    growth = (peak - before) * 1024
    faults = sum(count["faults"].values())
    print(
        f"load: {N} runs in {seconds:.1f} s ({N / seconds:.0f}/s), {IN_FLIGHT} in flight, "
        f"{faults} faults injected ({count['faults']}), {count['requests']} requests; lost "
        f"{len(lost)}, wrong {len(wrong)}, duplicates {duplicates}, missing {missing}, orphan "
        f"threads {count['orphan_threads']}; RSS {before // 1024} MB -> peak {peak // 1024} MB "
        f"(+{growth / N:.0f} B per item, bound {BYTES_PER_ITEM})"
    )
    assert len(result.outcomes) == N
    assert faults > N * 0.05  # ~4 requests per item, 5 % of them
    assert lost == [], [(k, by_key[k].error if k in by_key else None) for k in lost[:5]]
    assert wrong == [], wrong[:5]
    assert (duplicates, missing) == (0, 0)
    assert growth <= BYTES_PER_ITEM * N, f"{growth / N:.0f} bytes per item"
