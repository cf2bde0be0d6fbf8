"""Small networking helpers for the test servers: a free port, waiting until one answers,
and the start/stop context-manager protocol they share."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

__all__ = ["Startable", "accepts", "answers_ok", "find_free_port", "wait_until_ready"]

_S = TypeVar("_S", bound="Startable")


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    The port is found by binding to port 0 and reading what the OS chose; another
    process may still take it before the caller binds it.

    Args:
        host: The address to bind to.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether ``host:port`` accepts a TCP connection right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def answers_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET url`` answers 200 right now (any error or other status: no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_ready(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    exited: Callable[[], object | None] = lambda: None,
    details: Callable[[], str] = lambda: "",
    interval: float = 0.1,
) -> float:
    """Poll ``ready`` until it is true; the seconds it took.

    Args:
        ready: The check (a health URL answers, the port accepts).
        timeout: Seconds before giving up.
        what: What is waited for, for the message (``"prefect server"``).
        exited: Not ``None`` once the server is gone (its exit code, its error): fail at
            once rather than wait out the timeout.
        details: More text for the error (the tail of the server's log).
        interval: Seconds between checks.

    Raises:
        RuntimeError: The server exited, or was not ready within ``timeout``.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        gone = exited()
        if gone is not None:
            raise RuntimeError(_with(f"{what} exited ({gone}) before it was ready", details()))
        if ready():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise RuntimeError(_with(f"{what} was not ready within {timeout:g} s", details()))
        time.sleep(interval)


def _with(message: str, details: str) -> str:
    return f"{message}:\n{details}" if details else message


class Startable:
    """The context-manager protocol of a test server: ``with Server() as s`` calls
    :meth:`start` and, on the way out, :meth:`stop`."""

    def start(self) -> object:
        """Start the server (subclasses)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server (subclasses)."""
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
