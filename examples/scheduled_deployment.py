"""A nightly batch of agent runs as a Prefect deployment.

The flow loads a saved credentials block by name (any backend of this package: the name
is ``<block-type-slug>/<block-name>``, e.g. ``assistants-credentials/nightly``), reads the
batch's items from a JSONL or CSV file (so the items are never flow-run parameters) and
runs them with ``run_batch``. The batch key comes from the flow run's scheduled day, so
rerunning a day's flow run — or a retry of it — resumes that day's batch: nothing is
started twice.

Two ways to deploy it:

* ``python examples/scheduled_deployment.py`` serves it with a cron schedule from this
  process (``flow.serve``): a long-running process that runs the scheduled flow runs;
* ``cd examples && prefect deploy --all`` deploys it to a process work pool (see
  ``examples/prefect.yaml``), where ``prefect worker start --pool agent-runs`` picks its
  runs up.

Tested by ``tests/examples/test_scheduled_deployment.py`` on a real ``prefect server start``.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.blocks.core import Block
from prefect.runtime import flow_run

from prefect_agent_runs import AgentRunsCredentials
from prefect_agent_runs.cli.items import read_items
from prefect_agent_runs.flows import run_batch

HERE = Path(__file__).resolve().parent
DEFAULT_ITEMS = HERE / "data" / "questions.jsonl"


def batch_key_for(prefix: str) -> str:
    """``<prefix>-<yyyy-mm-dd>`` of the flow run's scheduled start (today outside a run)."""
    scheduled = flow_run.scheduled_start_time or datetime.now(timezone.utc)
    return f"{prefix}-{scheduled:%Y-%m-%d}"


# --8<-- [start:nightly]
@flow(name="nightly-agent-batch")
async def nightly_batch(
    items_path: str = str(DEFAULT_ITEMS),
    credentials_block: str = "assistants-credentials/nightly",
    assistant_id: str | None = None,
    batch_prefix: str = "nightly",
    max_concurrency: int = 16,
    timeout_seconds: float | None = 900,
    fail_on: float = 0.1,
) -> dict[str, Any]:
    """Run one remote run per item of ``items_path`` with the saved credentials block.

    Args:
        items_path: A JSONL or CSV file of items (``key``, ``message`` or ``input``...).
        credentials_block: The saved block, as ``<block-type-slug>/<block-name>``.
        assistant_id: The assistant of the items that name none.
        batch_prefix: The batch key is ``<batch_prefix>-<scheduled day>``.
        max_concurrency: Runs in flight at once.
        timeout_seconds: Longest wait for each run.
        fail_on: The flow run fails when more than this share of the items failed.

    Returns:
        The batch key and the outcome counts by status.
    """
    logger = get_run_logger()
    credentials = await Block.aload(credentials_block)
    if not isinstance(credentials, AgentRunsCredentials):
        raise TypeError(f"{credentials_block!r} is not a prefect-agent-runs credentials block")
    requests = read_items(items_path, default_assistant_id=assistant_id)
    batch_key = batch_key_for(batch_prefix)
    logger.info("batch %s: %d items from %s", batch_key, len(requests), items_path)
    result = await run_batch(
        credentials,
        requests,
        batch_key=batch_key,
        max_concurrency=max_concurrency,
        timeout_seconds=timeout_seconds,
        fail_on=fail_on,
    )
    return {"batch_key": batch_key, "counts": dict(result.counts)}


# --8<-- [end:nightly]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the nightly batch with a cron schedule.")
    parser.add_argument("--name", default="nightly", help="the deployment's name")
    parser.add_argument("--cron", default="0 2 * * *", help="the schedule (default 02:00)")
    parser.add_argument("--items", default=str(DEFAULT_ITEMS), help="the items' file")
    parser.add_argument("--block", default="assistants-credentials/nightly", help="the block")
    parser.add_argument("--assistant", default="asst_nightly", help="the assistant id")
    parser.add_argument("--batch-prefix", default="nightly", help="the batch key's prefix")
    args = parser.parse_args(argv)
    nightly_batch.serve(
        name=args.name,
        cron=args.cron,
        parameters={
            "items_path": args.items,
            "credentials_block": args.block,
            "assistant_id": args.assistant,
            "batch_prefix": args.batch_prefix,
        },
    )


if __name__ == "__main__":
    main()
