"""Helpers for the Prefect-native features' tests (events, global concurrency limits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect_agent_runs.testing.prefect_server import PrefectServer

SCRIPTS = Path(__file__).parent / "scripts"


def start_batch(server: PrefectServer, *args: str) -> subprocess.Popen[str]:
    """``scripts/batch.py ARGS`` in a child process talking to ``server``."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / "batch.py"), *args],
        env=server.env(PREFECT_LOGGING_LEVEL="WARNING"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
