"""``prefect-agent-runs demo``: a small batch against a backend's local server."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from prefect_agent_runs.cli._common import UsageError
from prefect_agent_runs.cli.run import open_out, run_batch_with_progress, write_records
from prefect_agent_runs.models import RunOutcome, RunRequest

__all__ = ["cmd_demo", "print_table"]

_REPLY_WIDTH = 60


def cmd_demo(args: argparse.Namespace) -> int:
    """``prefect-agent-runs demo``: a batch against a local server; the exit code."""
    print(
        f"demo: starting {args.items} runs on a local {args.backend} server "
        "(Prefect's temporary server takes 20-30 s to start the first time)...",
        file=sys.stderr,
        flush=True,
    )
    from prefect.settings import PREFECT_API_URL

    from prefect_agent_runs.backends import registry
    from prefect_agent_runs.blocks.credentials import credentials_class

    api = PREFECT_API_URL.value() or "embedded (ephemeral) Prefect server"
    spec = registry.get(args.backend)
    if spec.demo is None:
        raise UsageError(f"demo --backend {args.backend}: this backend has no demo")
    with contextlib.ExitStack() as stack:
        try:
            demo = stack.enter_context(spec.demo(args.items))
        except RuntimeError as exc:
            raise UsageError(f"demo --backend {args.backend}: {exc}") from None
        print(f"demo: {demo.description}; Prefect API: {api}", file=sys.stderr)
        credentials = credentials_class(spec.name)(**dict(demo.config))
        return _demo_finish(args, credentials, list(demo.requests))


def _demo_finish(args: argparse.Namespace, credentials: Any, requests: list[RunRequest]) -> int:
    out = open_out(args.out)
    try:
        result = run_batch_with_progress(
            credentials,
            requests,
            batch_key=None,
            max_concurrency=args.max_concurrency,
            timeout_seconds=60.0,
            cancel_on_timeout=True,
            collect_results=True,
            fail_on="never",
            progress=not args.no_progress,
        )
        if result is None:
            return 1
        if out is not None:
            write_records(result, out)
    finally:
        if out is not None:
            out.close()
    print_table(result.outcomes)
    return 0 if not result.failed else 1


def print_table(outcomes: Sequence[RunOutcome], stream: TextIO | None = None) -> None:
    """Print the outcomes as a table: key, status, seconds and reply text (or the error).

    Args:
        outcomes: The batch's outcomes.
        stream: Where to print (default ``sys.stdout``).
    """
    target = stream if stream is not None else sys.stdout
    rows = [("key", "status", "seconds", "reply")]
    for outcome in outcomes:
        seconds = (outcome.seconds_queued or 0.0) + (outcome.seconds_running or 0.0)
        text = outcome.result.text if outcome.result and outcome.result.text else ""
        if not outcome.ok and outcome.error:
            text = f"error: {outcome.error}"
        text = " ".join(text.split())
        if len(text) > _REPLY_WIDTH:
            text = text[: _REPLY_WIDTH - 1] + "…"
        rows.append(
            (outcome.key, outcome.status.value, f"{seconds:.2f}" if outcome.run else "", text)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for number, row in enumerate(rows):
        line = "  ".join(
            [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3]]
        )
        print(line.rstrip(), file=target)
        if number == 0:
            print("  ".join("-" * w for w in [*widths, len("reply")]), file=target)
