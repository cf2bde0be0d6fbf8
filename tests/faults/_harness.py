"""Run a batch through the fault proxy and count, on the server, what it made.

Shared by the fault, load and crash tests: one :class:`Target` per backend knows how to
build credentials pointing at the proxy, items whose result can be checked, and how to
count the threads and runs the server holds for a batch (read directly from the server
or emulator, never through the code under test).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from prefect_agent_runs.models import METADATA_BATCH_KEY, METADATA_ITEM_KEY, BatchResult

RETRY_MARKERS = ("retrying in", "ambiguous failure", "transient error while waiting", "looking")


@dataclass
class ServerCount:
    """What the server holds for one batch."""

    runs_by_key: Counter[str] = field(default_factory=Counter)
    threads_by_key: Counter[str] = field(default_factory=Counter)
    untagged_threads: int = 0

    def duplicates(self) -> int:
        """Runs beyond the first per key, plus tagged threads beyond the first per key."""
        extra_runs = sum(n - 1 for n in self.runs_by_key.values() if n > 1)
        extra_threads = sum(n - 1 for n in self.threads_by_key.values() if n > 1)
        return extra_runs + extra_threads


@dataclass
class Target:
    """One backend behind the proxy."""

    name: str
    server_url: str
    make_credentials: Callable[[str], Any]
    make_items: Callable[[int], list[dict[str, Any]]]
    expected_text: Callable[[int], str]
    count: Callable[[str], ServerCount]
    bind: Callable[[str, list[dict[str, Any]]], None] | None = None
    """Told which items a batch key got (where the server cannot tell: project threads)."""


def langgraph_items(n: int, *, sleep: float = 0.0) -> list[dict[str, Any]]:
    return [
        {
            "key": f"item-{i}",
            "assistant_id": "echo",
            "input": {
                "messages": [{"role": "user", "content": f"q{i}"}],
                "sleep_seconds": sleep,
            },
        }
        for i in range(n)
    ]


def message_items(n: int, assistant_id: str) -> list[dict[str, Any]]:
    return [
        {"key": f"item-{i}", "assistant_id": assistant_id, "message": f"q{i}"} for i in range(n)
    ]


def langgraph_count(base_url: str) -> Callable[[str], ServerCount]:
    def count(batch_key: str) -> ServerCount:
        out = ServerCount()
        with httpx.Client(base_url=base_url, timeout=60) as http:
            offset = 0
            threads: list[dict[str, Any]] = []
            while True:
                page = http.post(
                    "/threads/search",
                    json={
                        "metadata": {METADATA_BATCH_KEY: batch_key},
                        "limit": 500,
                        "offset": offset,
                    },
                ).json()
                threads += page
                if len(page) < 500:
                    break
                offset += len(page)
            for thread in threads:
                key = str(thread["metadata"].get(METADATA_ITEM_KEY))
                out.threads_by_key[key] += 1
                runs = http.get(f"/threads/{thread['thread_id']}/runs", params={"limit": 100})
                for run in runs.json() if runs.status_code == 200 else []:
                    out.runs_by_key[str(run["metadata"].get(METADATA_ITEM_KEY))] += 1
        return out

    return count


def assistants_count(emulator: Any) -> Callable[[str], ServerCount]:
    """Runs and their threads per key from the emulator's store; empty threads left behind
    (created, answer lost, never given a run) from its records of POST /threads."""

    def count(batch_key: str) -> ServerCount:
        out = ServerCount()
        threads_with_runs: set[str] = set()
        threads_by_key: dict[str, set[str]] = {}
        for run in emulator.runs():
            meta = run.get("metadata") or {}
            threads_with_runs.add(str(run.get("thread_id")))
            if meta.get(METADATA_BATCH_KEY) == batch_key:
                key = str(meta.get(METADATA_ITEM_KEY))
                out.runs_by_key[key] += 1
                threads_by_key.setdefault(key, set()).add(str(run.get("thread_id")))
        for key, threads in threads_by_key.items():
            out.threads_by_key[key] = len(threads)
        created = {
            str((r.response_json or {}).get("id"))
            for r in list(emulator.requests)
            if r.method == "POST" and r.route == "/threads" and r.status == 200
        }
        out.untagged_threads = len(created - threads_with_runs)
        return out

    return count


@dataclass
class BatchReport:
    """One row of the fault table."""

    backend: str
    fault: str
    items: int
    completed: int
    wrong: int
    lost: int
    duplicates: int
    retries: int
    faults_injected: int
    orphan_threads: int
    seconds: float
    errors: list[str] = field(default_factory=list)

    def row(self) -> str:
        return (
            f"| {self.fault} | {self.backend} | {self.items} | {self.duplicates} | {self.lost} "
            f"| {self.retries} | {self.faults_injected} | {self.orphan_threads} |"
        )


def count_retries(records: list[logging.LogRecord]) -> int:
    return sum(1 for r in records if any(m in r.getMessage() for m in RETRY_MARKERS))


def judge(
    target: Target,
    result: BatchResult,
    batch_key: str,
    *,
    fault: str,
    n: int,
    log_records: list[logging.LogRecord],
    faults_injected: int,
    seconds: float,
) -> BatchReport:
    count = target.count(batch_key)
    by_key = {o.key: o for o in result.outcomes}
    wrong = 0
    lost = 0
    errors: list[str] = []
    for i in range(n):
        outcome = by_key.get(f"item-{i}")
        if outcome is None or not outcome.ok:
            lost += 1
            if outcome is not None:
                errors.append(f"item-{i}: {outcome.error}")
            continue
        text = outcome.result.text if outcome.result else None
        if text != target.expected_text(i):
            wrong += 1
            errors.append(f"item-{i}: reply {text!r}")
    missing = [f"item-{i}" for i in range(n) if count.runs_by_key.get(f"item-{i}", 0) == 0]
    lost = max(lost, 0)
    if missing:
        errors.append(f"no run on the server for {missing[:5]}")
    return BatchReport(
        backend=target.name,
        fault=fault,
        items=n,
        completed=len(result.completed),
        wrong=wrong,
        lost=lost,
        duplicates=count.duplicates(),
        retries=count_retries(log_records),
        faults_injected=faults_injected,
        orphan_threads=count.untagged_threads,
        seconds=round(seconds, 1),
        errors=errors,
    )


def new_batch_key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def emulator_runs_count(
    emulator: Any, *, thread_keys: dict[str, dict[str, str]] | None = None
) -> Callable[[str], ServerCount]:
    """Runs per key from an emulator's store: by the run's batch tags (workflow runs), or,
    where runs carry no metadata (project threads), by the thread each item of the batch
    was given (``thread_keys[batch_key][thread_id] = key``)."""

    def count(batch_key: str) -> ServerCount:
        out = ServerCount()
        threads = (thread_keys or {}).get(batch_key, {})
        for run in emulator.runs():
            if thread_keys is not None:
                key = threads.get(str(run.get("threadId")))
                if key is not None:
                    out.runs_by_key[key] += 1
                continue
            meta = run.get("metadata") or {}
            if meta.get(METADATA_BATCH_KEY) == batch_key:
                out.runs_by_key[str(meta.get(METADATA_ITEM_KEY))] += 1
        return out

    return count
