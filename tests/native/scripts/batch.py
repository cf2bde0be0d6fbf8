"""Run one batch against an Assistants API at argv[1] and print its counts as JSON.

Usage: batch.py BASE_URL BATCH_KEY ITEMS FAIL_EVERY [SLOW_SECONDS] [LIMIT_NAME]
Items whose index is a multiple of FAIL_EVERY fail at once; the others complete after
SLOW_SECONDS. LIMIT_NAME names a global concurrency limit for the credentials block.
With BATCH_BARRIER=DIR:N in the environment it starts its batch only once N processes have
reached this point (so two batches overlap, whatever their Python and Prefect start cost).
BATCH_EVENTS sets run_batch's ``events`` level; after the batch, the script emits the event
``test.batch.done`` related to the batch (a sentinel: once it is stored, so is every event the
batch emitted before it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from prefect.events import emit_event
from prefect.events.worker import EventsWorker

from prefect_agent_runs import AssistantsCredentials, RunRequest
from prefect_agent_runs.flows import run_batch
from prefect_agent_runs.flows.events import batch_resource_id


def barrier() -> None:
    spec = os.environ.get("BATCH_BARRIER")
    if not spec:
        return
    folder, n = spec.rsplit(":", 1)
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(folder).iterdir())) < int(n):
        if time.monotonic() > deadline:
            raise SystemExit(f"barrier {folder}: the other batch processes never came")
        time.sleep(0.05)


def main() -> None:
    base_url, batch_key, n, fail_every = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    slow = float(sys.argv[5]) if len(sys.argv) > 5 else 0.05
    limit = sys.argv[6] if len(sys.argv) > 6 else None
    options = {"global_concurrency_limit": limit} if limit else {}
    credentials = AssistantsCredentials(base_url=base_url, api_key="sk-test", **options)
    requests = []
    for i in range(n):
        fail = fail_every and i % fail_every == 0
        script = {"outcome": "failed", "seconds": 0.05} if fail else {"seconds": slow}
        requests.append(
            RunRequest(
                key=f"item-{i}",
                assistant_id="asst_1",
                message=f"question {i}",
                metadata={"emulator": json.dumps(script)},
            )
        )
    events = {"events": os.environ["BATCH_EVENTS"]} if os.environ.get("BATCH_EVENTS") else {}
    barrier()
    result = run_batch(credentials, requests, batch_key=batch_key, max_concurrency=32, **events)
    emit_event(
        event="test.batch.done",
        resource={"prefect.resource.id": f"test.batch-script.{os.getpid()}"},
        related=[
            {"prefect.resource.id": batch_resource_id(batch_key), "prefect.resource.role": "batch"}
        ],
    )
    EventsWorker.drain_all(timeout=60)  # sent before the JSON line, which must come last
    errors = sorted({o.error for o in result.failed if o.error})
    print(json.dumps({"counts": dict(result.counts), "errors": errors}))


if __name__ == "__main__":
    main()
