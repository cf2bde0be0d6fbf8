"""Child processes for the crash and cancellation tests: start, watch, signal, account.

"No process of ours behind" is checked with psutil (``Tree``, the package's
``ProcessTree``): every descendant of a child seen while it ran (the flow's process,
Prefect's embedded server, a LangGraph dev server) must be gone once the child has exited.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prefect_agent_runs.testing._process import ProcessTree as Tree
from prefect_agent_runs.testing._process import end_group, spawn

SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).resolve().parents[2]


def child_env(*, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child Python: this checkout first on the path, no analytics,
    quiet logs, the given Prefect API (None: whatever this process uses; "" : none, so
    the child runs Prefect's embedded server)."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    url = PREFECT_API_URL.value() if api_url is None else api_url
    env.pop("PREFECT_API_URL", None)
    if url:
        env["PREFECT_API_URL"] = url
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        LANGSMITH_TRACING="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python ARGS`` (a script of tests/faults/scripts or ``-m module``), output to
    ``log``, in a process group of its own (:func:`stop` ends the group)."""
    out = log.open("wb")
    try:
        return spawn(
            [sys.executable, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    finally:
        out.close()  # the child holds its own copy


def script(name: str) -> str:
    return str(SCRIPTS / name)


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    alive: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> float:
    """Poll ``predicate`` until true; the seconds it took. Fails on timeout, or at once
    when ``alive`` exited (with the tail of ``log``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        if alive is not None and alive.poll() is not None:
            raise AssertionError(
                f"the child exited ({alive.returncode}) before {what}:\n{tail(log)}"
            )
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout} s\n{tail(log)}")


def tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop(child: subprocess.Popen[bytes], tree: Tree | None = None) -> None:
    """Make sure the child and what it started are gone (test cleanup): its process group
    is killed, then whatever of its tree moved out of that group."""
    if tree is not None:
        tree.snapshot()
    end_group(child, grace=0)
    if tree is not None:
        tree.kill_left()
