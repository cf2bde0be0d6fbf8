"""``run_batch`` of a list in Prefect's embedded mode, whose first server start times out.

Usage: python slow_embedded_start.py BASE_URL N

The first start of Prefect's embedded server gets 1 s (a fresh ``PREFECT_HOME`` needs 20 s
or more), and its timeout is raised only once that server answers: the time ran out just
as it came up, holding its port. Any later start gets Prefect's setting. Prints one JSON line: the pids of the servers
started, which of them still run, and each item's text.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any

import httpx
from prefect.server.api.server import SubprocessASGIServer

from prefect_agent_runs import AssistantsCredentials, RunRequest
from prefect_agent_runs.flows import run_batch

started: list[int] = []
_start = SubprocessASGIServer.start


def start(self: Any, timeout: int | None = None) -> None:
    if self.running:
        return _start(self, timeout)
    first = not started
    try:
        return _start(self, 1 if first else timeout)
    except RuntimeError:
        if first:  # the time ran out as the server came up (as in CI): it holds its port
            wait_until_healthy(self.api_url)
        raise
    finally:
        if self.server_process is not None:
            started.append(self.server_process.pid)


def wait_until_healthy(api_url: str, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the first embedded server never answered at {api_url}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main() -> None:
    base_url, n = sys.argv[1], int(sys.argv[2])
    SubprocessASGIServer.start = start  # type: ignore[method-assign]
    requests = [
        RunRequest(key=f"k{i}", assistant_id="asst_echo", message=f"q{i}") for i in range(n)
    ]
    result = run_batch(AssistantsCredentials(base_url=base_url, api_key="sk-test"), requests)
    texts = [o.result.text if o.result else None for o in result.outcomes]
    running = [pid for pid in started if alive(pid)]
    print(json.dumps({"started": started, "running": running, "texts": texts, "me": os.getpid()}))


if __name__ == "__main__":
    main()
