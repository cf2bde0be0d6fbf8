"""Helpers for the Prefect-native features' tests (events, global concurrency limits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect_agent_runs.testing._process import end_group, spawn
from prefect_agent_runs.testing.prefect_server import PrefectServer

SCRIPTS = Path(__file__).parent / "scripts"


def start_batch(
    server: PrefectServer, *args: str, barrier: str | None = None, events: str | None = None
) -> subprocess.Popen[str]:
    """``scripts/batch.py ARGS`` in a child process talking to ``server``, in a process
    group of its own (:func:`finish` reads its output and ends the group). ``barrier``
    (``DIR:N``): the batch starts once N such processes are ready. ``events``: the batch's
    ``events`` level (default: run_batch's)."""
    extra = {"BATCH_BARRIER": barrier} if barrier else {}
    if events is not None:
        extra["BATCH_EVENTS"] = events
    return spawn(
        [sys.executable, str(SCRIPTS / "batch.py"), *args],
        env=server.env(PREFECT_LOGGING_LEVEL="WARNING", **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 300) -> str:
    """Wait for ``process`` to exit and return its output; its process group is killed
    after it exits, or after ``timeout`` (then the test fails)."""
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        end_group(process, grace=0)
    return output
