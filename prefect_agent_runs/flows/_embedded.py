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
"""

from __future__ import annotations

__all__ = [
    "EMBEDDED_SERVER_TIMEOUT_TEXT",
    "EmbeddedServerDidNotStart",
    "describe_start_failure",
    "ensure_embedded_server",
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
