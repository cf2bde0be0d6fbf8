"""The progress display of ``prefect-agent-runs`` on stderr.

On a terminal it is a :mod:`rich` progress bar (rich comes with Prefect), redrawn at most
ten times a second; anywhere else (a pipe, a CI log) it prints a plain line each time
another 10 % of the items finish.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from prefect_agent_runs.models import RunOutcome

__all__ = ["ProgressBar"]


class ProgressBar:
    """Counts finished items and shows them on a stream (stderr by default).

    Args:
        total: How many items the batch has.
        stream: Where to draw (default ``sys.stderr``).
        label: The word in front of the bar.
        width: Characters of the bar itself (terminal mode).
        interactive: Force terminal (``True``) or plain-line (``False``) mode; ``None``
            asks ``stream.isatty()``.
        min_interval_seconds: Shortest time between two redraws in terminal mode.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        label: str = "runs",
        width: int = 30,
        interactive: bool | None = None,
        min_interval_seconds: float = 0.1,
    ) -> None:
        self.total = max(0, total)
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.width = width
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty()) if callable(isatty) else False
        self.interactive = interactive
        self.min_interval_seconds = min_interval_seconds
        self.done = 0
        self.failed = 0
        self.lines_written = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = 0
        self._closed = False
        self._drawn = False
        self._rich: Progress | None = None
        self._task: TaskID | None = None

    @property
    def elapsed_seconds(self) -> float:
        """Seconds since the bar was created."""
        return time.monotonic() - self._started

    def start(self) -> None:
        """Draw the empty bar (terminal mode only)."""
        if self.interactive:
            console = Console(file=self.stream, force_terminal=True, soft_wrap=True)
            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=self.width),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[failed_text]}"),
                TimeElapsedColumn(),
                console=console,
                auto_refresh=False,
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.label, total=self.total, failed_text="")
            self._draw(force=True)

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        """Count ``n`` more finished items, ``failed`` of them unsuccessful."""
        self.update(self.done + n, failed=self.failed + failed)

    def update(self, done: int, *, failed: int | None = None, total: int | None = None) -> None:
        """Set the number of finished (and failed) items, and redraw if it is time."""
        if total is not None:
            self.total = max(0, total)
        self.done = min(done, self.total) if self.total else done
        if failed is not None:
            self.failed = failed
        if self.interactive:
            self._draw()
        else:
            self._plain()

    def on_outcome(self, outcome: RunOutcome, done: int, total: int) -> None:
        """A :func:`~prefect_agent_runs.flows.progress_listener` callback."""
        failed = self.failed + (0 if outcome.ok else 1)
        self.update(done, failed=failed, total=total)

    def close(self) -> None:
        """Draw the final state and end the line (terminal mode)."""
        if self._closed:
            return
        self._closed = True
        if self._rich is not None:
            self._draw(force=True)
            self._rich.stop()

    def _text(self) -> str:
        percent = 100.0 if self.total == 0 else 100.0 * self.done / self.total
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.done}/{self.total} ({percent:.0f}%{failed}) {self.elapsed_seconds:.1f}s"

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        finished = self.total and self.done >= self.total
        if not force and not finished and now - self._last_draw < self.min_interval_seconds:
            return
        self._last_draw = now
        if self._rich is None or self._task is None:
            self.start()
            return
        failed = f"{self.failed} failed" if self.failed else ""
        self._rich.update(self._task, completed=self.done, total=self.total, failed_text=failed)
        self._rich.refresh()
        self._drawn = True

    def _plain(self) -> None:
        if self.total == 0:
            return
        decile = min(10, self.done * 10 // self.total)
        if decile <= self._last_decile:
            return
        self._last_decile = decile
        self.stream.write(f"{self.label}: {self._text()}\n")
        self.stream.flush()
        self.lines_written += 1
