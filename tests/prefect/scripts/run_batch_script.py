"""Run ``run_batch`` against a LangGraph server in its own process (resume / SIGTERM tests).

Usage: python run_batch_script.py URL BATCH_KEY N SLEEP_SECONDS MAX_CONCURRENCY

The Prefect API comes from the environment (``PREFECT_API_URL``). Prints ``STARTED`` when
the flow body begins and ``DONE <counts>`` at the end.
"""

from __future__ import annotations

import sys

from prefect_agent_runs.blocks.credentials import LangGraphCredentials
from prefect_agent_runs.flows import run_batch


def items(n: int, sleep_seconds: float) -> list[dict[str, object]]:
    return [
        {
            "assistant_id": "echo",
            "key": f"item-{i}",
            "input": {
                "messages": [{"role": "user", "content": f"msg {i}"}],
                "sleep_seconds": sleep_seconds,
                "steps": 4,
            },
        }
        for i in range(n)
    ]


def main() -> None:
    url, batch_key, n, sleep_seconds, max_concurrency = sys.argv[1:6]
    print("STARTED", flush=True)
    result = run_batch(
        LangGraphCredentials(base_url=url),
        items(int(n), float(sleep_seconds)),
        batch_key=batch_key,
        max_concurrency=int(max_concurrency),
    )
    print("DONE", result.counts, flush=True)


if __name__ == "__main__":
    main()
