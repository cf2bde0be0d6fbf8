"""A real ``prefect server start`` for end-to-end tests: deployments, workers, events.

Prefect's own ``prefect_test_harness`` runs a server inside the test process. Some things
need a server other processes can reach the way users deploy: ``flow.serve`` in another
process, a process work pool and its worker, events sent by flow runs in subprocesses.
:class:`PrefectServer` starts one on a free loopback port with its own ``PREFECT_HOME``
and SQLite database, and stops it (its whole process group) on exit: nothing is left
running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from prefect_agent_runs.testing._ports import (
    Startable,
    answers_ok,
    find_free_port,
    wait_until_ready,
)
from prefect_agent_runs.testing._process import end_group, spawn

__all__ = ["PrefectServer"]


class PrefectServer(Startable):
    """``prefect server start`` on ``127.0.0.1`` and a free port, SQLite, no analytics.

    Example:
        ```python
        from prefect_agent_runs.testing import PrefectServer

        with PrefectServer() as server:
            subprocess.run(["prefect", "block", "register", "-m", "prefect_agent_runs"],
                           env=server.env(), check=True)
        ```

    Args:
        ui: Serve the Prefect UI too (for screenshots; it is slower to start).
        startup_timeout_seconds: How long to wait for ``GET /api/health``.
        home: The ``PREFECT_HOME`` to use (default: a new temporary directory, removed on
            stop).
        server_env: More environment for the server process only (e.g.
            ``{"PREFECT_API_BLOCKS_REGISTER_ON_START": "false"}``: a catalog of only the
            block types registered by hand).
    """

    def __init__(
        self,
        *,
        ui: bool = False,
        startup_timeout_seconds: float = 120.0,
        home: Path | None = None,
        server_env: dict[str, str] | None = None,
    ) -> None:
        self.ui = ui
        self.server_env = dict(server_env or {})
        self.startup_timeout_seconds = startup_timeout_seconds
        self._own_home = home is None
        self.home = home or Path(tempfile.mkdtemp(prefix="prefect-server-"))
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """The server's root URL (the UI, when served), ``http://127.0.0.1:<port>``."""
        if self.port is None:
            raise RuntimeError("PrefectServer is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The value for ``PREFECT_API_URL``: ``http://127.0.0.1:<port>/api``."""
        return f"{self.url}/api"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (its children are its workers)."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        """The server's combined stdout and stderr."""
        return self.home / "server.log"

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for a child process that talks to this server.

        Args:
            **extra: More variables to set.

        Returns:
            ``os.environ`` with ``PREFECT_API_URL`` and this server's ``PREFECT_HOME``.
        """
        env = dict(os.environ)
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
        )
        env.update(extra)
        return env

    def start(self) -> None:
        """Start the server and wait until it answers ``/api/health``.

        Raises:
            RuntimeError: The server exited or did not answer in time (with its log's tail).
        """
        self.port = find_free_port()
        env = self.env(
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(self.port),
            PREFECT_LOGGING_LEVEL="WARNING",
            **self.server_env,
        )
        env.pop("PREFECT_API_URL")  # the server itself must not call another one
        self.home.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        command = [sys.executable, "-m", "prefect", "server", "start"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--analytics-off"]
        command += ["--ui" if self.ui else "--no-ui"]
        self._process = spawn(  # its own process group: stop() ends all of it
            command,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        process = self._process
        try:
            wait_until_ready(
                lambda: answers_ok(f"{self.api_url}/health"),
                timeout=self.startup_timeout_seconds,
                what="prefect server",
                exited=process.poll,
                details=self._log_tail,
                interval=0.25,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL) and remove its home."""
        process, self._process = self._process, None
        if process is not None:
            end_group(process, grace=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
