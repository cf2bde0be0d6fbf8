"""Live progress of the batches running in this process, for displays (the CLI's bar).

A callable cannot be a Prefect flow parameter (parameters are serialized), so a display
registers itself here for the duration of a batch::

    with progress_listener(lambda outcome, done, total: print(f"{done}/{total}")):
        run_batch(credentials, requests)

Listeners are called in the flow's event loop, once per finished item; keep them quick.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from prefect_agent_runs.models import RunOutcome

__all__ = ["ProgressListener", "notify_progress", "progress_listener"]

logger = logging.getLogger("prefect_agent_runs.flows.progress")

ProgressListener = Callable[[RunOutcome, int, int], None]
"""Called with (the item's outcome, items finished so far, items in the batch)."""

_listeners: list[ProgressListener] = []
_lock = threading.Lock()


@contextlib.contextmanager
def progress_listener(listener: ProgressListener) -> Iterator[ProgressListener]:
    """Call ``listener`` for every item that finishes while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield listener
    finally:
        with _lock:
            _listeners.remove(listener)


def notify_progress(outcome: RunOutcome, done: int, total: int) -> None:
    """Tell every listener an item finished (a failing listener is logged, not raised)."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(outcome, done, total)
        except Exception:
            logger.exception("a progress listener failed")
