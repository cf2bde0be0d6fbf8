"""Serve an ASGI app with uvicorn on a free loopback port in a background thread."""

from __future__ import annotations

import threading
from typing import Any

import uvicorn

from prefect_agent_runs.testing._ports import Startable, accepts, find_free_port, wait_until_ready

__all__ = ["ServedApp"]

KEEP_ALIVE_SECONDS = 75
"""How long an idle client connection stays open (nginx's default)."""

_ASGIApp = Any


class ServedApp(Startable):
    """Base class: an ASGI app served by uvicorn in a daemon thread with its own event loop.

    Subclasses set ``self.app`` (any ASGI application) before :meth:`start` is called.
    Use it as a context manager, or call :meth:`start` and :meth:`stop`.

    Example:
        ```python
        with MyServedApp() as served:
            httpx.get(served.url + "/health")
        ```

    Args:
        host: The loopback address to bind.
        port: A fixed port, or ``None`` for a free one chosen at start.
        start_timeout: Seconds to wait for the server to accept connections.
    """

    app: _ASGIApp

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._start_timeout = start_timeout
        self._uvicorn: uvicorn.Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._serve_error: BaseException | None = None

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the server listens on (only once started).

        Raises:
            RuntimeError: If the server has not been started.
        """
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def url(self) -> str:
        """The server's root URL, ``http://host:port`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._serve_thread is not None and self._serve_thread.is_alive()

    def start(self) -> None:
        """Start serving and wait until the port accepts connections.

        Raises:
            RuntimeError: If the server did not come up within ``start_timeout``.
        """
        if self.running:
            return
        attempts = 1 if self._requested_port is not None else 3
        last_error: BaseException | None = None
        for _ in range(attempts):
            port = self._requested_port or find_free_port(self._host)
            try:
                self._start_on(port)
                return
            except RuntimeError as exc:  # port taken between choice and bind: try another
                last_error = exc
                self.stop()
        raise RuntimeError(f"{type(self).__name__} could not start: {last_error}")

    def _start_on(self, port: int) -> None:
        config = uvicorn.Config(
            self.app,
            host=self._host,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            # a platform's load balancer keeps idle connections for a minute or more;
            # uvicorn's 5 s equals httpx's keep-alive expiry, and a connection reused at
            # that instant is closed under the request (a stray error no fault injected)
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            access_log=False,
        )
        server = uvicorn.Server(config)
        self._uvicorn = server
        self._port = port
        self._serve_error = None

        def _run() -> None:
            try:
                server.run()
            except BaseException as exc:  # uvicorn calls sys.exit(1) on bind errors
                self._serve_error = exc

        thread = threading.Thread(target=_run, name=f"{type(self).__name__}:{port}", daemon=True)
        self._serve_thread = thread
        thread.start()
        wait_until_ready(
            lambda: server.started and accepts(self._host, port),
            timeout=self._start_timeout,
            what=f"{type(self).__name__} on port {port}",
            exited=lambda: None if thread.is_alive() else repr(self._serve_error),
            interval=0.01,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and join its thread.

        Args:
            timeout: Seconds to wait for the thread to end.
        """
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._serve_thread is not None:
            self._serve_thread.join(timeout)
        self._serve_thread = None
        self._uvicorn = None
