"""A stop signal that lands inside an event-loop callback still stops the batch.

Prefect's flow engine turns SIGTERM into ``TerminationSignal``, raised by a Python signal
handler in whatever the main thread is running. Most of the time that is the event loop's
``select`` (the exception leaves the loop, the batch's task is cancelled, its cleanup
cancels the remote runs) or one of the batch's own coroutines (the exception goes through
it). But when the signal lands while the loop runs a plain callback (a timer, a future's
done-callback), ``asyncio`` catches the exception, logs "Exception in callback" and goes
on: the batch keeps running and nothing cancels its remote runs (seen in CI: SIGTERM to a
flow process, its four runs still active 20 s later).

:func:`stop_signals_reach` watches the loop's exception handler for such an exception
(a ``BaseException`` that is not an ``Exception``, as a signal's is). It cancels the
watched task, and once the task's cleanup ran, raises that same exception from it, as if
the signal had landed there. Prefect's own SIGTERM handler stays installed (its runner
checks it is, before it acknowledges a cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

__all__ = ["stop_signals_reach", "stoppable"]

P = ParamSpec("P")
T = TypeVar("T")


def _is_stop(exc: object) -> bool:
    """A signal's exception (``TerminationSignal``; the CLI's ``Terminated``), not a bug's."""
    return (
        isinstance(exc, BaseException)
        and not isinstance(exc, Exception)
        and not isinstance(exc, (asyncio.CancelledError, GeneratorExit))
    )


class _Watch:
    """The exception handler of one loop, while it runs one or more watched tasks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.previous = loop.get_exception_handler()
        self.caught: dict[asyncio.Task[Any], BaseException | None] = {}
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if _is_stop(exc) and self.caught:
            for task, caught in self.caught.items():
                if caught is None:
                    self.caught[task] = exc
                    task.cancel()
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def stop_signals_reach() -> AsyncIterator[None]:
    """Within this block, a signal's exception raised in a loop callback reaches this task.

    Raises:
        BaseException: The signal's exception (``TerminationSignal``), after the block
            unwound from the cancellation it caused.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - a coroutine driven by hand
        yield
        return
    watch = _WATCHES.get(loop)
    if watch is not None and task in watch.caught:  # nested in the same task: the outer
        yield  # block catches the signal and raises it
        return
    if watch is None:
        watch = _WATCHES[loop] = _Watch(loop)
    watch.caught[task] = None
    try:
        yield
    finally:
        caught = watch.caught.pop(task)
        if not watch.caught:
            loop.set_exception_handler(watch.previous)
            del _WATCHES[loop]
        if caught is not None:
            if sys.version_info >= (3, 11):
                task.uncancel()
            raise caught


def stoppable(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate a coroutine function: its body runs within :func:`stop_signals_reach`."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        async with stop_signals_reach():
            return await fn(*args, **kwargs)

    return wrapper
