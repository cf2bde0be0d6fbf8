"""The Assistants emulator behind the fault proxy, in a process of its own (for the load test).

Started by ``test_load.py`` as ``python _load_server.py RATE SEED STALL``; prints one JSON
line ``{"url": ...}`` (the proxy's ``/v1`` root), then serves until it reads a line on
stdin: ``count BATCH_KEY`` prints the server-side count of that batch as one JSON line;
``quit`` (or EOF) stops. A process of its own, so that the test process's memory is the
client's alone and the server's CPU does not share the client's GIL.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _proxy import ALL_KINDS, FaultProxy

from prefect_agent_runs.models import METADATA_BATCH_KEY, METADATA_ITEM_KEY
from prefect_agent_runs.testing import AssistantsEmulator


def count(emu: AssistantsEmulator, batch_key: str) -> dict[str, object]:
    runs: Counter[str] = Counter()
    replies = 0
    threads_with_runs: set[str] = set()
    for run in emu.runs():
        threads_with_runs.add(str(run.get("thread_id")))
        meta = run.get("metadata") or {}
        if meta.get(METADATA_BATCH_KEY) == batch_key:
            runs[str(meta.get(METADATA_ITEM_KEY))] += 1
            replies += run.get("status") == "completed"
    created = {
        str((r.response_json or {}).get("id"))
        for r in list(emu.requests)
        if r.method == "POST" and r.route == "/threads" and r.status == 200
    }
    return {
        "runs_by_key": dict(runs),
        "completed": replies,
        "orphan_threads": len(created - threads_with_runs),
        "requests": len(emu.requests),
    }


def main() -> None:
    rate, seed, stall = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    with (
        AssistantsEmulator(run_seconds=0.05, poll_after_ms=50) as emu,
        FaultProxy(emu.base_url, stall_seconds=stall, seed=seed) as proxy,
    ):
        proxy.set_faults(rate, ALL_KINDS, seed=seed)
        print(json.dumps({"url": proxy.url_for(emu.base_url)}), flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] == "count":
                out = count(emu, words[1])
                out["faults"] = {k: v for k, v in proxy.counts().items() if k != "none"}
                print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
