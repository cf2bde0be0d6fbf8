"""Prefect artifacts of a batch: one throttled progress artifact, a table and a summary.

Keys are lowercase-dash slugs of the batch key: ``<batch>-progress``, ``<batch>-runs`` and
``<batch>-summary``. Artifacts are best effort: a failure to write one is logged, never
raised (the remote runs matter more than their report).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)

from prefect_agent_runs.flows._ledger import slugify
from prefect_agent_runs.models import BatchResult, FailOn

__all__ = ["ProgressReporter", "artifact_keys", "write_final_artifacts"]

logger = logging.getLogger("prefect_agent_runs.flows.artifacts")

MAX_ERROR_CHARS = 300
MAX_FAILED_LISTED = 50


def artifact_keys(batch_key: str) -> dict[str, str]:
    """The artifact keys of a batch: ``progress``, ``table`` and ``summary``."""
    base = slugify(batch_key, max_length=70)
    return {
        "progress": f"{base}-progress",
        "table": f"{base}-runs",
        "summary": f"{base}-summary",
    }


class ProgressReporter:
    """Keeps one progress artifact up to date, at most once per ``interval_seconds``.

    Updates run in a background coroutine, so finishing items never wait for the API.

    Args:
        batch_key: The batch (names the artifact).
        total: Number of items.
        interval_seconds: Shortest time between two updates.
    """

    def __init__(self, batch_key: str, total: int, *, interval_seconds: float = 1.0) -> None:
        self.key = artifact_keys(batch_key)["progress"]
        self.batch_key = batch_key
        self.total = total
        self.interval_seconds = interval_seconds
        self.done = 0
        self.updates = 0
        self._shown = -1
        self._artifact_id: UUID | None = None
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.done / self.total, 2)

    def _description(self) -> str:
        return f"Batch `{self.batch_key}`: {self.done} of {self.total} runs finished."

    async def start(self) -> None:
        """Create the artifact (0 %) and start the updater."""
        try:
            self._artifact_id = await acreate_progress_artifact(
                progress=self.percent, key=self.key, description=self._description()
            )
            self._shown = self.done
        except Exception as exc:
            logger.warning("could not create the progress artifact %s: %s", self.key, exc)
            return
        self._loop_task = asyncio.ensure_future(self._loop())

    def advance(self, n: int = 1) -> None:
        """Count finished items (cheap; the updater publishes them)."""
        self.done += n

    async def _publish(self) -> None:
        if self._artifact_id is None or self.done == self._shown:
            return
        shown = self.done
        try:
            await aupdate_progress_artifact(
                self._artifact_id, progress=self.percent, description=self._description()
            )
            self._shown = shown
            self.updates += 1
        except Exception as exc:
            logger.debug("could not update the progress artifact %s: %s", self.key, exc)

    async def _loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, self.interval_seconds - (time.monotonic() - last)))
            last = time.monotonic()
            await self._publish()

    async def close(self) -> None:
        """Stop the updater and publish the final count."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(BaseException):
                await self._loop_task
            self._loop_task = None
        await asyncio.shield(self._publish())


def _cell(value: Any, limit: int = MAX_ERROR_CHARS) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table_rows(result: BatchResult) -> list[dict[str, Any]]:
    """One row per item: key, thread, run, status, seconds, error."""
    rows = []
    for o in result.outcomes:
        seconds = (o.seconds_queued or 0.0) + (o.seconds_running or 0.0)
        rows.append(
            {
                "key": o.key,
                "thread": o.run.thread_id if o.run else "",
                "run": o.run.id if o.run else "",
                "status": o.status.value,
                "seconds": round(seconds, 2) if o.run else None,
                "error": _cell(o.error),
            }
        )
    return rows


def summary_markdown(
    result: BatchResult, *, fail_on: FailOn, seconds: float, resume_hint: str
) -> str:
    """Counts by status, the failed items with their errors, and how to resume."""
    failed = result.failed
    lines = [
        f"# Batch `{result.batch_key}`",
        "",
        f"{len(result.outcomes)} items in {seconds:.1f} s: "
        f"{len(result.completed)} completed, {len(failed)} not completed "
        f"(fail_on={fail_on!r}: {'FAILED' if result.should_fail(fail_on) else 'ok'}).",
        "",
        "| status | items |",
        "|---|---|",
    ]
    lines += [f"| {status} | {n} |" for status, n in sorted(result.counts.items())]
    if failed:
        lines += [
            "",
            "## Items that did not complete",
            "",
            "| key | run | error |",
            "|---|---|---|",
        ]
        for o in failed[:MAX_FAILED_LISTED]:
            err = _cell(o.error or o.status.value).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {o.key} | {o.run.id if o.run else ''} | {err} |")
        if len(failed) > MAX_FAILED_LISTED:
            lines.append(f"\n… and {len(failed) - MAX_FAILED_LISTED} more (see the table).")
    lines += ["", "## Resume", "", resume_hint]
    return "\n".join(lines)


async def write_final_artifacts(
    result: BatchResult, *, fail_on: FailOn, seconds: float, resume_hint: str
) -> dict[str, str]:
    """Write the table and the summary; returns the keys written."""
    keys = artifact_keys(result.batch_key)
    written: dict[str, str] = {}
    try:
        await acreate_table_artifact(
            table=table_rows(result),
            key=keys["table"],
            description=f"Runs of batch `{result.batch_key}`.",
        )
        written["table"] = keys["table"]
    except Exception as exc:
        logger.warning("could not create the table artifact %s: %s", keys["table"], exc)
    try:
        await acreate_markdown_artifact(
            markdown=summary_markdown(
                result, fail_on=fail_on, seconds=seconds, resume_hint=resume_hint
            ),
            key=keys["summary"],
            description=f"Summary of batch `{result.batch_key}`.",
        )
        written["summary"] = keys["summary"]
    except Exception as exc:
        logger.warning("could not create the summary artifact %s: %s", keys["summary"], exc)
    return written
