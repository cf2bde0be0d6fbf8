"""Prefect's embedded (ephemeral) server: started up front, so a slow start is not lost.

Without ``PREFECT_API_URL``, Prefect starts an embedded server in a subprocess the first time
a client is asked for. With a fresh ``PREFECT_HOME`` that start takes 22-24 s on a 2-core
machine (its database migrations), and Prefect gives it 20 s
(``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``). When the first client is the one
``prefect.results`` asks for (storing a batch's items), Prefect swallows the timeout, falls
back to local storage, and the flow engine then starts a second server over the first: the
first is never stopped and outlives the program (seen in CI, and on a first ``demo`` here).

:func:`ensure_embedded_server` starts it before that, and on a timeout stops what Prefect
left running and tries once more (the second start finds the database migrated: 12-16 s).

:func:`stop_embedded_server` stops the servers this process started (the CLI, on its way
out: Prefect stops them only from ``atexit``, which a signal's default action skips), and
any child Prefect lost track of.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "EMBEDDED_SERVER_TIMEOUT_TEXT",
    "EmbeddedServerDidNotStart",
    "describe_start_failure",
    "embedded_servers",
    "ensure_embedded_server",
    "stop_embedded_server",
]

EMBEDDED_SERVER_TIMEOUT_TEXT = "ephemeral Prefect API server"
"""Words of Prefect's own timeout message (a ``RuntimeError``), kept in ours."""


class EmbeddedServerDidNotStart(RuntimeError):
    """Prefect's embedded server did not start in time (a ``RuntimeError``, as Prefect's
    own timeout is); the message says what to do."""


def describe_start_failure(exc: BaseException) -> str:
    """What to tell a user whose embedded server did not start: Prefect's words, the timeout
    it had, and what to do."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"Prefect's embedded server did not start in time ({first_line!r}); it got "
        f"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="
        f"{PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()} s a try. Set that "
        "variable higher, or run a Prefect server (`prefect server start`) and set "
        "PREFECT_API_URL."
    )


def ensure_embedded_server(attempts: int = 2) -> None:
    """Start Prefect's embedded server now if this process will use one (no
    ``PREFECT_API_URL``); a no-op when it runs already or an API is configured.

    Raises:
        EmbeddedServerDidNotStart: It did not start in ``attempts`` tries (the message
            says what to do); nothing it started is left running.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    for attempt in range(1, attempts + 1):
        server = SubprocessASGIServer()
        try:
            server.start()
            return
        except RuntimeError as exc:
            server.stop()  # Prefect leaves a server that timed out running
            if EMBEDDED_SERVER_TIMEOUT_TEXT not in str(exc):
                raise
            if attempt == attempts:
                raise EmbeddedServerDidNotStart(describe_start_failure(exc)) from exc


def embedded_servers() -> list[Any]:
    """Prefect's embedded API servers of this process that have a running subprocess."""
    module = sys.modules.get("prefect.server.api.server")
    servers = getattr(module, "SubprocessASGIServer", None) if module is not None else None
    instances = list(getattr(servers, "_instances", {}).values())
    return [s for s in instances if getattr(s, "server_process", None) is not None]


def stop_embedded_server(keep: Sequence[Any] = ()) -> None:
    """Stop Prefect's embedded (ephemeral) API servers this process started, but ``keep``.

    Prefect stops them from an ``atexit`` hook only, which a signal's default action skips.
    A no-op when the command talked to a configured Prefect API.

    Args:
        keep: Servers that were running before (a caller's test harness): left alone.
    """
    servers = [s for s in embedded_servers() if not any(s is kept for kept in keep)]
    kept_pids = {s.server_process.pid for s in keep if getattr(s, "server_process", None)}
    orphans = [pid for pid in _embedded_server_children() if pid not in kept_pids]
    if not servers and not orphans:
        return
    _drain_prefect_workers()
    for server in servers:
        server.stop()
    for pid in orphans:
        _end_child(pid)


def _embedded_server_children() -> list[int]:
    """Pids of this process's children that are Prefect embedded servers (Linux ``/proc``;
    elsewhere none are found).

    Prefect loses track of one: when its first start outlasts
    ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (a fresh ``PREFECT_HOME`` takes
    20-25 s on a 2-core machine, against a default of 20), the caller that asked falls
    back, and the next one starts a second server over the first, which no ``stop()``
    reaches. Its environment names it: ``PREFECT__SERVER_EPHEMERAL=1``.
    """
    me = os.getpid()
    found: list[int] = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
            if parent != me:
                continue
            with open(f"/proc/{entry}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
        if b"PREFECT__SERVER_EPHEMERAL=1" in variables:
            found.append(int(entry))
    return found


def _end_child(pid: int, grace: float = 5.0) -> None:
    """SIGTERM a child, up to ``grace`` seconds for it to exit, then SIGKILL; reaped."""
    import time

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # reaped already (by its Popen)
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _drain_prefect_workers(timeout: float = 5.0) -> None:
    """Send what Prefect's API log and event workers still hold, before the embedded server
    they send to stops. Prefect drains them only at exit, by when the server is gone: each
    retries against the closed port with backoff, and the command hung for over a minute
    after its work was done ("Error logging to API")."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            result = worker.drain_all(timeout=timeout)
        except Exception as exc:  # a worker that never started, or one shutting down
            logging.getLogger("prefect_agent_runs.flows").debug(
                "could not drain %s: %s", worker.__name__, exc
            )
            continue
        if inspect.iscoroutine(result):  # called inside an event loop: cannot wait here
            result.close()
