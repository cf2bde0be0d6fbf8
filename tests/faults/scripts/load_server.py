"""The Assistants emulator behind the fault proxy, in a process of its own (the load test).

Usage: python load_server.py CONFIG_JSON

CONFIG_JSON keys: ``rate`` (share of requests faulted, the seven kinds drawn evenly),
``stall_seconds``, ``seed``, ``run_seconds`` and ``poll_after_ms`` (the emulator's).

Prints ``READY <proxy base url>`` (the emulator's ``/v1`` through the proxy) once both
serve, then reads one command per line on stdin:

* ``COUNT <batch_key> <path>``: writes what the server holds as JSON to ``path`` and prints
  ``COUNTED``: every run tagged with the batch (key, run id, thread id, status, the last
  assistant message of its thread), the threads that have no run, the requests the emulator
  answered, the proxy's faults by kind and the requests it failed to forward.

It exits when stdin closes. The test reads the server only through this file, never through
the code under test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/faults: the proxy

from _proxy import ALL_KINDS, FaultProxy

from prefect_agent_runs.models import METADATA_BATCH_KEY, METADATA_ITEM_KEY
from prefect_agent_runs.testing import AssistantsEmulator


def count(emu: AssistantsEmulator, proxy: FaultProxy, batch_key: str) -> dict[str, Any]:
    """What the emulator holds for ``batch_key``, read from its own store."""
    runs: list[dict[str, Any]] = []
    with emu._lock:  # one consistent snapshot of the store (runs, threads, messages)
        threads = dict(emu._threads)
        for thread_id, thread in threads.items():
            replies = [m for m in thread.messages if m["role"] == "assistant"]
            for run in thread.runs:
                emu._advance(run)
                meta = run.data.get("metadata") or {}
                if meta.get(METADATA_BATCH_KEY) != batch_key:
                    continue
                reply = replies[-1]["content"][0]["text"]["value"] if replies else None
                runs.append(
                    {
                        "key": meta.get(METADATA_ITEM_KEY),
                        "id": run.data["id"],
                        "thread_id": thread_id,
                        "status": run.data["status"],
                        "reply": reply,
                    }
                )
        empty_threads = sum(1 for t in threads.values() if not t.runs)
        requests = len(emu.requests)
    return {
        "runs": runs,
        "threads_without_run": empty_threads,
        "emulator_requests": requests,
        "proxy": dict(proxy.counts()),
        # unfaulted requests the proxy could not forward (it answered 502 itself)
        "upstream_errors": sum(1 for r in proxy.records if r.fault is None and not r.forwarded),
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    emu = AssistantsEmulator(
        run_seconds=float(config.get("run_seconds", 0.05)),
        poll_after_ms=config.get("poll_after_ms", 50),
    )
    with (
        emu,
        FaultProxy(emu.base_url, stall_seconds=float(config["stall_seconds"])) as proxy,
    ):
        proxy.set_faults(float(config["rate"]), ALL_KINDS, seed=int(config.get("seed", 0)))
        print(f"READY {proxy.url_for(emu.base_url)}", flush=True)
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "COUNT" and len(parts) == 3:
                with open(parts[2], "w", encoding="utf-8") as out:
                    json.dump(count(emu, proxy, parts[1]), out)
                print("COUNTED", flush=True)
            else:
                print(f"ERROR unknown command {line.strip()!r}", flush=True)


if __name__ == "__main__":
    main()
