"""Prefect artifacts of a batch: one throttled progress artifact, a table and a summary.

Keys are lowercase-dash slugs of the batch key: ``<batch>-progress``, ``<batch>-runs`` and
``<batch>-summary``. A table over :data:`TABLE_PAGE_BYTES` continues in ``<batch>-runs-2``,
``<batch>-runs-3``, … (:func:`table_keys`). Artifacts are best effort: a failure to write one
is logged, never raised (the remote runs matter more than their report).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    Artifact,
    MarkdownArtifact,
    TableArtifact,
    acreate_progress_artifact,
)
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import ArtifactUpdate

from prefect_agent_runs.flows._ledger import slugify
from prefect_agent_runs.models import BatchResult, FailOn, RunOutcome

__all__ = [
    "ProgressReporter",
    "artifact_keys",
    "counts_message",
    "short_error",
    "write_final_artifacts",
]

logger = logging.getLogger("prefect_agent_runs.flows.artifacts")

MAX_ERROR_CHARS = 120
MAX_REPLY_CHARS = 80
MAX_FULL_ERROR_CHARS = 2000
MAX_FAILED_LISTED = 50
TABLE_PAGE_BYTES = 1_000_000
"""Most bytes of one table artifact's rows, counted as a JSON string (the way an event holds
them). Prefect's server (3.9) copies a keyed artifact's data into an ``artifact-collection``
event and refuses an event over 1.5 MB (``PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES``) with a
WARNING in its log: a single table of 10,000 rows made a 2.1 MB event. A longer table goes
on in more artifacts, each of whose events fits."""

_PREFIX = re.compile(r"^[\w.-]+: run \S+(?: on thread \S+)? \([^)]*\)(?: failed:)?\s*")


def short_error(outcome: RunOutcome) -> str:
    """``status: reason`` without the long ``backend: run R on thread T (status)`` prefix."""
    if outcome.error is None:
        return ""
    status = outcome.status.value
    reason = outcome.run.error if outcome.run is not None and outcome.run.error else None
    if reason is None:
        reason = _PREFIX.sub("", outcome.error).strip() or outcome.error
    reason = " ".join(reason.split())
    return _cell(f"{status}: {reason}" if status != "unknown" else reason, MAX_ERROR_CHARS)


def counts_message(result: BatchResult) -> str:
    """``54 completed, 6 failed`` (most frequent first), for the flow run's state message."""
    counts = Counter(result.counts)
    if not counts:
        return "no items"
    return ", ".join(f"{n} {status}" for status, n in counts.most_common())


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
        self.by_status: Counter[str] = Counter()
        self.updates = 0
        self._shown = -1
        self._artifact_id: UUID | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._client: PrefectClient | None = None
        self._owns_client = False

    @property
    def percent(self) -> float:
        """Finished items in percent (0 while the total is unknown)."""
        if self.total <= 0:
            return 100.0 if self.total == 0 else 0.0
        return min(100.0, round(100.0 * self.done / self.total, 2))

    def _description(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in self.by_status.most_common())
        total = "?" if self.total < 0 else str(self.total)
        text = f"Batch `{self.batch_key}`: {self.done} of {total} runs finished"
        return f"{text} ({counts})." if counts else f"{text}."

    async def start(self, client: PrefectClient | None = None) -> None:
        """Create the artifact (0 %) and start the updater.

        Args:
            client: The Prefect client to send updates with (default: one of its own).
        """
        try:
            self._artifact_id = await acreate_progress_artifact(
                progress=self.percent, key=self.key, description=self._description()
            )
            self._shown = self.done
        except Exception as exc:
            logger.warning("could not create the progress artifact %s: %s", self.key, exc)
            return
        if client is not None:
            self._client = client
        else:
            self._client = get_client()
            await self._client.__aenter__()
            self._owns_client = True
        self._loop_task = asyncio.ensure_future(self._loop())

    def advance(self, n: int = 1, status: str | None = None) -> None:
        """Count finished items (cheap; the updater publishes them)."""
        self.done += n
        if status is not None:
            self.by_status[status] += n

    async def _publish(self) -> None:
        if self._artifact_id is None or self._client is None or self.done == self._shown:
            return
        shown = self.done
        try:
            await self._client.update_artifact(
                self._artifact_id,
                ArtifactUpdate(data=self.percent, description=self._description()),
            )
            self._shown = shown
            self.updates += 1
        except Exception as exc:
            logger.debug("could not update the progress artifact %s: %s", self.key, exc)

    async def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            wait = max(0.0, self.interval_seconds - (time.monotonic() - last))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=wait)
            if self._stop.is_set():
                return
            last = time.monotonic()
            await self._publish()

    async def close(self) -> None:
        """Stop the updater and publish the final count.

        An update in flight is let finish, not cancelled: a cancelled request may still
        reach the server after the final one, and the artifact would stay at, say, 80 %.
        """
        if self._loop_task is not None:
            self._stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), timeout=30)
            except BaseException:
                self._loop_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._loop_task
            self._loop_task = None
        try:
            await asyncio.shield(self._publish())
        finally:
            client, self._client = self._client, None
            if client is not None and self._owns_client:
                await client.__aexit__(None, None, None)


def _cell(value: Any, limit: int = MAX_ERROR_CHARS) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reply(outcome: RunOutcome) -> str:
    text = outcome.result.text if outcome.result is not None else None
    if not text:
        return ""
    return _cell(text.strip().splitlines()[0] if text.strip() else "", MAX_REPLY_CHARS)


def table_rows(result: BatchResult) -> list[dict[str, Any]]:
    """One row per item: key, status, seconds, error (short), reply, then thread and run.

    The ids come last: they are long, and the Prefect UI clips a wide table on the right, so
    what tells the story (status, reason, reply) comes first.
    """
    rows = []
    for o in result.outcomes:
        seconds = (o.seconds_queued or 0.0) + (o.seconds_running or 0.0)
        rows.append(
            {
                "key": o.key,
                "status": o.status.value,
                "seconds": round(seconds, 2) if o.run and math.isfinite(seconds) else None,
                "error": short_error(o),
                "reply": _reply(o),
                "thread": o.run.thread_id if o.run else "",
                "run": o.run.id if o.run else "",
            }
        )
    return rows


def table_keys(batch_key: str, pages: int) -> list[str]:
    """The keys of a table in ``pages`` artifacts: ``<batch>-runs``, ``<batch>-runs-2``, …"""
    first = artifact_keys(batch_key)["table"]
    return [first] + [f"{first}-{page}" for page in range(2, pages + 1)]


def table_pages(
    rows: list[dict[str, Any]], budget: int = TABLE_PAGE_BYTES
) -> list[tuple[int, str]]:
    """The rows as JSON arrays, in order: ``(rows in the page, the page's JSON)``, each page
    at most ``budget`` bytes once escaped into a JSON string (a single row longer than that
    is a page of its own). At least one page."""
    pages: list[tuple[int, str]] = []
    page: list[str] = []
    size = 2
    for row in rows:
        encoded = json.dumps(row, ensure_ascii=False)
        cost = len(json.dumps(encoded)) + 1  # escaped as an event holds it (ASCII: at most)
        if page and size + cost > budget:
            pages.append((len(page), "[" + ",".join(page) + "]"))
            page, size = [], 2
        page.append(encoded)
        size += cost
    pages.append((len(page), "[" + ",".join(page) + "]"))
    return pages


def summary_markdown(
    result: BatchResult,
    *,
    fail_on: FailOn,
    seconds: float,
    resume_hint: str,
    table: Sequence[str] = (),
) -> str:
    """Counts by status, the failed items (a short reason in a table, then each full error,
    which wraps, with its run and thread), and how to resume. ``table``: the keys of the
    table's artifacts, named when there is more than one."""
    failed = result.failed
    lines = [
        f"# Batch `{result.batch_key}`",
        "",
        f"{len(result.outcomes)} items in {seconds:.1f} s: "
        f"{len(result.completed)} completed, {len(failed)} not completed. "
        f"With fail_on {_fail_on_text(fail_on)} the batch "
        f"{'FAILED' if result.should_fail(fail_on) else 'passed'}.",
        "",
        "| status | items |",
        "|---|---|",
    ]
    lines += [f"| {status} | {n} |" for status, n in sorted(result.counts.items())]
    if len(table) > 1:
        names = ", ".join(f"`{key}`" for key in table)
        lines += ["", f"The table of runs is in {len(table)} artifacts, in order: {names}."]
    if failed:
        lines += [
            "",
            "## Items that did not complete",
            "",
            "| key | status | reason |",
            "|---|---|---|",
        ]
        listed = failed[:MAX_FAILED_LISTED]
        for o in listed:
            reason = short_error(o).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {o.key} | {o.status.value} | {reason} |")
        lines += ["", "### Full errors", ""]
        for o in listed:
            err = _cell(o.error or o.status.value, MAX_FULL_ERROR_CHARS).replace("\n", " ")
            where = f" (run `{o.run.id}`, thread `{o.run.thread_id or '-'}`)" if o.run else ""
            lines.append(f"- **{o.key}**{where}: {err}")
        if len(failed) > MAX_FAILED_LISTED:
            lines.append(f"\n… and {len(failed) - MAX_FAILED_LISTED} more (see the table).")
    lines += ["", "## Resume", "", resume_hint]
    return "\n".join(lines)


def _fail_on_text(fail_on: FailOn) -> str:
    if fail_on == "never":
        return "never"
    if fail_on == "any":
        return "any (one failed item fails the batch)"
    return f"{float(fail_on):g} (a failure ratio above it fails the batch)"


class _RowsArtifact(TableArtifact):
    """One page of :func:`table_pages`, sent as it is.

    Prefect's ``TableArtifact`` validates every row and walks every cell for NaN before it
    encodes the table: 0.2 s of the flow's CPU at 10,000 rows. These rows hold only
    strings, None and finite numbers (``table_rows``), so they are encoded once, by page.
    """

    encoded: str = ""

    async def aformat(self) -> str:
        return self.encoded


async def _create(artifact: Artifact, what: str) -> bool:
    try:
        await artifact.acreate()
    except Exception as exc:  # best effort: the runs matter more than their report
        logger.warning("could not create the %s artifact %s: %s", what, artifact.key, exc)
        return False
    return True


def _table_artifacts(result: BatchResult) -> list[tuple[str, Artifact]]:
    """The table's artifacts, ``(what, artifact)``: ``table``, then ``table-2``, …"""
    rows = table_rows(result)
    pages = table_pages(rows, TABLE_PAGE_BYTES)  # read here: a test lowers it
    keys = table_keys(result.batch_key, len(pages))
    out: list[tuple[str, Artifact]] = []
    first = 1
    for number, (key, (count, encoded)) in enumerate(zip(keys, pages, strict=True), 1):
        where = ""
        if len(pages) > 1:
            following = f"; continued in `{keys[number]}`" if number < len(pages) else ""
            where = (
                f" Rows {first:,}-{first + count - 1:,} of {len(rows):,}"
                f" (page {number} of {len(pages)}){following}."
            )
        first += count
        artifact = _RowsArtifact.model_construct(
            type="table",
            key=key,
            description=f"Runs of batch `{result.batch_key}`.{where}",
            table=[],
            encoded=encoded,
        )
        out.append(("table" if number == 1 else f"table-{number}", artifact))
    return out


async def write_final_artifacts(
    result: BatchResult, *, fail_on: FailOn, seconds: float, resume_hint: str
) -> dict[str, str]:
    """Write the table (in pages) and the summary, at once; returns the keys written: the
    summary's and the table's first page (``artifact_keys`` names them), then any further
    page as ``table-2``, ``table-3``, …"""
    tables = _table_artifacts(result)
    summary = MarkdownArtifact(
        key=artifact_keys(result.batch_key)["summary"],
        description=f"Summary of batch `{result.batch_key}`.",
        markdown=summary_markdown(
            result,
            fail_on=fail_on,
            seconds=seconds,
            resume_hint=resume_hint,
            table=[str(artifact.key) for _, artifact in tables],
        ),
    )
    artifacts = [*tables, ("summary", summary)]
    done = await asyncio.gather(*(_create(artifact, what) for what, artifact in artifacts))
    return {
        what: str(artifact.key) for (what, artifact), ok in zip(artifacts, done, strict=True) if ok
    }
