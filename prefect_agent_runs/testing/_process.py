"""Child processes for tests and test servers: each in its own process group, ended whole.

A child that starts children of its own (``prefect server start`` and its uvicorn, the
CLI and Prefect's embedded server, ``flow.serve`` and its flow-run processes) leaves them
running when only the child itself is killed. Every child here is therefore started with
``start_new_session=True`` (its own session and process group, its pid as group id), and
ended by signalling that group: whatever it started and did not move elsewhere goes too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "Completed",
    "ProcessTree",
    "end_group",
    "end_group_and_read",
    "group_members",
    "run",
    "signal_group",
    "spawn",
    "spawned",
]


_POLL_SECONDS = 0.5
"""How often :func:`run` looks whether the command itself has exited."""


def spawn(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(args, **kwargs)`` in a new session and process group.

    Args:
        args: The command.
        **kwargs: Passed to ``Popen`` (``start_new_session`` is always true).

    Returns:
        The started process; end it with :func:`end_group`.
    """
    kwargs["start_new_session"] = True
    return subprocess.Popen(list(args), **kwargs)


def signal_group(process: subprocess.Popen[Any], sig: int) -> None:
    """Send ``sig`` to the process group of ``process`` (started by :func:`spawn`).

    A group with no process left is no error. On Windows (no process groups) the process
    itself is terminated or killed.
    """
    if os.name == "nt":  # pragma: no cover - no process groups on Windows
        if sig == signal.SIGTERM:
            process.terminate()
        else:
            process.kill()
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def end_group(
    process: subprocess.Popen[Any], *, grace: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """End ``process`` and its process group: ``sig`` (unless ``grace`` is 0), up to
    ``grace`` seconds for the process to exit, then SIGKILL to whatever of the group is
    left; the process is reaped. Calling it on a process that already exited is harmless
    (its leftover children are still killed).

    Args:
        process: A process started by :func:`spawn`.
        grace: Seconds the process gets to exit after ``sig``; 0 kills at once.
        sig: The first signal (SIGTERM; SIGINT for a ``flow.serve`` that should unwind).
    """
    if grace > 0 and process.poll() is None:
        signal_group(process, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # children left behind (the group outlives its leader), or the leader itself
    signal_group(process, signal.SIGKILL)
    process.wait()


def end_group_and_read(
    process: subprocess.Popen[Any], *, grace: float = 30.0, sig: int = signal.SIGTERM
) -> Any:
    """:func:`end_group` for a process whose stdout is a pipe: its whole output.

    ``sig`` to the group, up to ``grace`` seconds for the output to end (the process and
    every child holding the pipe exited), then SIGKILL to the group.

    Returns:
        What the process wrote to its stdout pipe (``str`` or ``bytes``, as it was opened).
    """
    if process.poll() is None:
        signal_group(process, sig)
    try:
        out, _ = process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
        out, _ = process.communicate()
    signal_group(process, signal.SIGKILL)
    return out


@contextlib.contextmanager
def spawned(args: Sequence[str], *, grace: float = 10.0, **kwargs: Any) -> Iterator[Any]:
    """:func:`spawn` as a context manager: the group is ended (:func:`end_group`) on exit,
    whatever happened inside."""
    process = spawn(args, **kwargs)
    try:
        yield process
    finally:
        end_group(process, grace=grace)


class Completed(subprocess.CompletedProcess[Any]):
    """What :func:`run` returns: ``subprocess.CompletedProcess`` and what the command left
    running in its process group when it exited (killed since)."""

    left_behind: dict[int, str]


def group_members(pgid: int) -> dict[int, str]:
    """The processes (pid -> command line) of the process group ``pgid`` still running
    (zombies count as gone); needs ``psutil``."""
    import psutil

    out: dict[int, str] = {}
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out[proc.pid] = " ".join(proc.info["cmdline"] or [])[:200]
        except (OSError, psutil.Error):
            continue
    return out


def run(
    args: Sequence[str],
    *,
    timeout: float,
    input: Any = None,
    check: bool = False,
    **kwargs: Any,
) -> Completed:
    """``subprocess.run`` in a new process group, the group killed on the way out.

    On a timeout (or any other exception, e.g. a test interrupted) the whole group is
    killed, not only the child: a command that started a server (Prefect's embedded one)
    leaves nothing running. Once the command itself exited, whatever it left in its group
    is recorded (``left_behind``, for the caller to assert on) and killed: a child that
    keeps the output pipe open does not hold the caller up.

    Args:
        args: The command.
        timeout: Seconds before the group is killed and ``TimeoutExpired`` raised.
        input: Sent to standard input (``stdin`` becomes a pipe).
        check: Raise ``CalledProcessError`` on a non-zero exit code.
        **kwargs: Passed to ``Popen``; ``capture_output=True`` pipes stdout and stderr.

    Returns:
        The completed process, as ``subprocess.run`` returns it, with ``left_behind``.
    """
    if kwargs.pop("capture_output", False):
        kwargs["stdout"] = subprocess.PIPE
        kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    deadline = time.monotonic() + timeout
    left_behind: dict[int, str] = {}
    process = spawn(args, **kwargs)
    try:
        while True:
            try:
                stdout, stderr = process.communicate(input, timeout=_POLL_SECONDS)
                break
            except subprocess.TimeoutExpired as exc:
                input = None  # sent already: communicate() goes on where it was
                if process.poll() is not None:  # exited; a child of it holds the pipe
                    left_behind = group_members(process.pid)
                    signal_group(process, signal.SIGKILL)
                    stdout, stderr = process.communicate()
                    break
                if time.monotonic() >= deadline:
                    end_group(process, grace=0)
                    exc.timeout = timeout
                    exc.stdout, exc.stderr = process.communicate()
                    raise
        if not left_behind:
            left_behind = group_members(process.pid)
    finally:
        end_group(process, grace=0)
    completed = Completed(list(args), process.returncode, stdout, stderr)
    completed.left_behind = left_behind
    if check:
        completed.check_returncode()
    return completed


class ProcessTree:
    """The descendants of a process, remembered while it runs (needs ``psutil``, in the
    ``test`` extra): what a test asserts is gone once the process has exited."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, str] = {}

    def snapshot(self) -> dict[int, str]:
        """Record the current descendants (pid -> command line); returns the new total."""
        import psutil

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
        import psutil

        out: dict[int, str] = {}
        for pid, cmd in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    out[pid] = cmd
            except psutil.NoSuchProcess:
                continue
        return out

    def wait_gone(
        self, timeout: float, *, but: Callable[[str], bool] | None = None
    ) -> dict[int, str]:
        """Wait up to ``timeout`` for every seen descendant to exit; what is left.

        Args:
            timeout: Seconds to wait.
            but: Descendants whose command line this is true for are not waited for (a
                helper that rightly lives as long as the process itself).
        """
        deadline = time.monotonic() + timeout

        def left() -> dict[int, str]:
            return {p: c for p, c in self.alive().items() if but is None or not but(c)}

        now = left()
        while now and time.monotonic() < deadline:
            time.sleep(0.1)
            now = left()
        return now

    def kill_left(self) -> None:
        """Clean up after a failed test: SIGKILL whatever of the tree still runs."""
        import psutil

        for pid in self.alive():
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                continue
