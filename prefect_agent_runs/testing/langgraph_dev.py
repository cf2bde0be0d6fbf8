"""Run the real LangGraph Agent Server (``langgraph dev``) for tests, demos and benchmarks.

The server runs in memory, offline, with the deterministic ``echo`` graph from
:mod:`prefect_agent_runs.testing.langgraph_app.graph` (no LLM). Needs the
``langgraph`` extra: ``pip install "prefect-agent-runs[langgraph]"``.

Example:
    ```python
    import httpx
    from prefect_agent_runs.testing.langgraph_dev import LangGraphDevServer

    with LangGraphDevServer() as server:
        run = httpx.post(
            f"{server.base_url}/runs/wait",
            json={"assistant_id": server.graph_id,
                  "input": {"messages": [{"role": "user", "content": "hi"}]}},
        ).json()
    ```
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from prefect_agent_runs.backends.registry import Demo
from prefect_agent_runs.models import RunRequest
from prefect_agent_runs.testing._demo import demo_seconds
from prefect_agent_runs.testing._ports import (
    Startable,
    answers_ok,
    find_free_port,
    wait_until_ready,
)
from prefect_agent_runs.testing._process import end_group, spawn

__all__ = ["GRAPH_ID", "LangGraphDevServer", "demo", "find_langgraph_executable"]

GRAPH_ID = "echo"
"""The graph id (and default assistant id) of the echo graph on the dev server."""

_INSTALL_HINT = (
    "The LangGraph Agent Server is not installed: "
    'pip install "prefect-agent-runs[langgraph]" '
    '(installs "langgraph-cli[inmem]", langgraph and langgraph-sdk).'
)
_APP_DIR = Path(__file__).resolve().parent / "langgraph_app"
_STOP_GRACE_SECONDS = 10.0
# environment variables that could make the server talk to LangSmith / LangChain services
_NETWORK_ENV_TO_DROP = (
    "LANGSMITH_API_KEY",
    "LANGCHAIN_API_KEY",
    "LANGSMITH_CONTROL_PLANE_API_KEY",
    "LANGGRAPH_CLOUD_LICENSE_KEY",
    "LANGSMITH_ENDPOINT",
    "LANGCHAIN_ENDPOINT",
)


def find_langgraph_executable() -> str:
    """Find the ``langgraph`` CLI with the in-memory server.

    Looks next to ``sys.executable`` first (the active virtual environment), then on
    ``PATH``.

    Returns:
        The path of the ``langgraph`` executable.

    Raises:
        RuntimeError: If ``langgraph-cli[inmem]`` is not installed.
    """
    if importlib.util.find_spec("langgraph_cli") is None or (
        importlib.util.find_spec("langgraph_api") is None
    ):
        raise RuntimeError(_INSTALL_HINT)
    name = "langgraph.exe" if os.name == "nt" else "langgraph"
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("langgraph")
    if found is None:
        raise RuntimeError(_INSTALL_HINT)
    return found


class LangGraphDevServer(Startable):
    """The real LangGraph Agent Server serving the ``echo`` graph, as a context manager.

    Starts ``langgraph dev --no-browser --no-reload`` on a loopback port from a temporary
    directory holding a generated ``langgraph.json``, waits until ``GET /ok`` answers and
    stops the whole process group on exit. The server keeps everything in memory.

    Args:
        port: The port to listen on; a free one is picked when ``None``.
        n_jobs_per_worker: How many runs the server executes at once.
        startup_timeout_seconds: How long to wait for ``GET /ok`` before giving up.
        env: Extra environment variables for the server (applied last), e.g.
            ``{"BG_JOB_TIMEOUT_SECS": "1"}`` to make runs end with status ``timeout``.
        workdir: Run the server in this folder (created if missing) and keep it on stop,
            instead of a fresh temporary folder. The dev server persists its state in
            ``.langgraph_api/`` under its working folder and reloads it on start, so a copy
            of a kept folder gives a server that already holds earlier threads. Two servers
            must never share one folder.

    Example:
        ```python
        with LangGraphDevServer() as server:
            print(server.base_url, server.graph_id)
        ```
    """

    graph_id: str = GRAPH_ID

    def __init__(
        self,
        port: int | None = None,
        n_jobs_per_worker: int = 64,
        startup_timeout_seconds: float = 60.0,
        env: Mapping[str, str] | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        self.port: int = port if port is not None else find_free_port()
        self.n_jobs_per_worker = n_jobs_per_worker
        self.startup_timeout_seconds = startup_timeout_seconds
        self.extra_env: dict[str, str] = dict(env or {})
        self.workdir: Path | None = Path(workdir) if workdir is not None else None
        self.startup_seconds: float | None = None
        """Seconds from spawning the CLI until ``GET /ok`` answered (set by ``start``)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None
        self._log_file: Path | None = None

    @property
    def base_url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id of the ``langgraph dev`` process (``None`` when not started)."""
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """The file receiving the server's stdout and stderr (``None`` before start)."""
        return self._log_file

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> LangGraphDevServer:
        """Start the server and wait until it answers ``GET /ok``.

        Returns:
            This server.

        Raises:
            RuntimeError: If the CLI is missing, or the server exits or does not answer
                within ``startup_timeout_seconds`` (the message holds the log's tail).
        """
        if self._process is not None:
            raise RuntimeError("LangGraphDevServer is already started")
        executable = find_langgraph_executable()
        if self.workdir is not None:
            tmpdir = self.workdir
            tmpdir.mkdir(parents=True, exist_ok=True)
        else:
            tmpdir = Path(tempfile.mkdtemp(prefix="prefect-agent-runs-langgraph-"))
            self._tmpdir = tmpdir
        config = {
            "dependencies": [str(_APP_DIR)],
            "graphs": {GRAPH_ID: f"{_APP_DIR / 'graph.py'}:graph"},
        }
        config_path = tmpdir / "langgraph.json"
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        self._log_file = tmpdir / "server.log"
        env = {k: v for k, v in os.environ.items() if k not in _NETWORK_ENV_TO_DROP}
        env.update(
            {
                "LANGSMITH_TRACING": "false",
                "LANGSMITH_TRACING_V2": "false",
                "LANGCHAIN_TRACING_V2": "false",
                "LANGCHAIN_TRACING": "false",
                "LANGGRAPH_CLI_NO_ANALYTICS": "1",
                "LANGGRAPH_METRICS_ENABLED": "false",
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
            }
        )
        env.update(self.extra_env)
        command = [
            executable,
            "dev",
            "--no-browser",
            "--no-reload",
            "--config",
            str(config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n-jobs-per-worker",
            str(self.n_jobs_per_worker),
        ]
        started = time.monotonic()
        with open(self._log_file, "wb") as log:
            self._process = spawn(  # its own process group: stop() ends all of it
                command,
                cwd=tmpdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_until_ready(self, started: float) -> None:
        process = self._process
        assert process is not None
        wait_until_ready(
            lambda: answers_ok(f"{self.base_url}/ok"),
            timeout=self.startup_timeout_seconds - (time.monotonic() - started),
            what=f"langgraph dev on {self.base_url}",
            exited=process.poll,
            details=self._log_tail,
        )

    def _log_tail(self, lines: int = 40) -> str:
        if self._log_file is None or not self._log_file.exists():
            return "(no server log)"
        text = self._log_file.read_text(encoding="utf-8", errors="replace")
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self._log_file} ---\n{tail}"

    def stop(self) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after 10 s.

        Then removes the temporary directory (with the server log), unless the server runs
        in a ``workdir`` of the caller's. Calling ``stop`` twice is harmless.
        """
        process, self._process = self._process, None
        if process is not None:
            end_group(process, grace=_STOP_GRACE_SECONDS)
        tmpdir, self._tmpdir = self._tmpdir, None
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def demo(items: int) -> Iterator[Demo]:
    """``prefect-agent-runs demo --backend langgraph``: the real dev server and echo items.

    Args:
        items: How many demo runs.

    Raises:
        RuntimeError: ``langgraph dev`` is not installed (the ``langgraph`` extra).
    """
    find_langgraph_executable()
    print("demo: starting the LangGraph dev server (langgraph dev)...", file=sys.stderr)
    with LangGraphDevServer() as server:
        yield Demo(
            config={"base_url": server.base_url},
            requests=[
                RunRequest(
                    assistant_id=GRAPH_ID,
                    key=f"item-{i:03d}",
                    message=f"hello from demo item {i}",
                    input={"sleep_seconds": demo_seconds(i)},
                )
                for i in range(1, items + 1)
            ],
            description=f"{items} runs of the {GRAPH_ID!r} graph on the LangGraph dev server "
            f"at {server.base_url}",
        )
