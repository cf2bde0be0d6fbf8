"""The engine's one clock: every deadline, poll wait, retry backoff and create lookup reads it.

:func:`monotonic` and :func:`sleep` are the defaults of the wait engine
(:mod:`prefect_agent_runs.waiting`), the batch engine (:func:`prefect_agent_runs.batch.run_items`),
the transport's retries and the create lookups. :func:`use_clock` replaces both for the code
it wraps. It sets a context variable, so the flow and task runs started inside inherit it:
a test drives a whole ``run_batch`` (``timeout_seconds`` included) on a fake clock, without
sleeping and without a parameter in the flow's schema.

Example:
    ```python
    from prefect_agent_runs.testing import AssistantsEmulator, FakeClock
    from prefect_agent_runs.timing import use_clock

    clock = FakeClock()
    with AssistantsEmulator(clock=clock, outcome="never") as emu, use_clock(clock, clock.sleep):
        result = await run_batch(credentials, items, timeout_seconds=600)  # no real wait
    ```

Only the engine's time goes through here: Prefect's own timers, the progress artifact's
throttle and the ledger's flush keep real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Clock", "Sleep", "monotonic", "sleep", "use_clock"]

Clock = Callable[[], float]
"""A monotonic clock in seconds (``time.monotonic``; tests inject a fake one)."""
Sleep = Callable[[float], Awaitable[None]]
"""An async sleep (``asyncio.sleep``; tests inject one that only advances a fake clock)."""

_CURRENT: ContextVar[tuple[Clock, Sleep] | None] = ContextVar(
    "prefect_agent_runs_clock", default=None
)


def monotonic() -> float:
    """The current clock's reading: ``time.monotonic()`` unless :func:`use_clock` is active."""
    current = _CURRENT.get()
    return time.monotonic() if current is None else current[0]()


async def sleep(seconds: float) -> None:
    """Sleep on the current clock: ``asyncio.sleep`` unless :func:`use_clock` is active.

    Args:
        seconds: How long.
    """
    current = _CURRENT.get()
    if current is None:
        await asyncio.sleep(seconds)
    else:
        await current[1](seconds)


@contextmanager
def use_clock(clock: Clock, sleep: Sleep) -> Iterator[None]:
    """Make the engine read ``clock`` and wait with ``sleep`` inside the ``with`` block.

    Args:
        clock: A monotonic clock (e.g. :class:`prefect_agent_runs.testing.FakeClock`).
        sleep: An async sleep on that clock (e.g. ``FakeClock.sleep``, which advances it).

    Yields:
        Nothing; the previous clock is back when the block ends.
    """
    token = _CURRENT.set((clock, sleep))
    try:
        yield
    finally:
        _CURRENT.reset(token)
