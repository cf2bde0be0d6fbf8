"""Child processes for the crash and cancellation tests: start, watch, signal, account.

"No process of ours behind" is checked with psutil: every descendant of a child seen while
it ran (the flow's process, Prefect's embedded server, a LangGraph dev server) must be gone
once the child has exited.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

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
    ``log``."""
    out = log.open("wb")
    try:
        return subprocess.Popen(
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


class Tree:
    """The descendants of a process, remembered while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, str] = {}

    def snapshot(self) -> dict[int, str]:
        """Record the current descendants (pid -> command line); returns the new total."""
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return self.seen
        for child in children:
            try:
                self.seen.setdefault(child.pid, " ".join(child.cmdline())[:200])
            except psutil.Error:
                continue
        return self.seen

    def alive(self) -> dict[int, str]:
        """Descendants seen earlier that still run (zombies count as gone)."""
        out: dict[int, str] = {}
        for pid, cmd in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    out[pid] = cmd
            except psutil.NoSuchProcess:
                continue
        return out

    def wait_gone(self, timeout: float) -> dict[int, str]:
        """Wait up to ``timeout`` for every seen descendant to exit; what is left."""
        deadline = time.monotonic() + timeout
        left = self.alive()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.alive()
        return left

    def kill_left(self) -> None:
        """Clean up after a failed test: SIGKILL whatever of the tree still runs."""
        for pid in self.alive():
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                continue


def stop(child: subprocess.Popen[bytes], tree: Tree | None = None) -> None:
    """Make sure the child and what it started are gone (test cleanup)."""
    if tree is not None:
        tree.snapshot()
    if child.poll() is None:
        child.kill()
        child.wait(timeout=30)
    if tree is not None:
        tree.kill_left()
