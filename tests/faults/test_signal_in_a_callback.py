"""SIGTERM that lands while the event loop runs a plain callback (``prefect_agent_runs/_signals.py``).

Prefect's SIGTERM handler raises ``TerminationSignal`` wherever the main thread is. In an
``asyncio`` callback (a timer, a done-callback) the loop catches it, logs "Exception in
callback" and goes on; CI saw a batch keep its four runs active after SIGTERM that way.
These tests deliver a real SIGTERM from inside a callback (``signal.raise_signal`` runs the
Python handler at once), with Prefect's own handler installed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.exceptions import TerminationSignal
from prefect.utilities.engine import _prefect_sigterm_handler

from prefect_agent_runs._signals import stop_signals_reach

SAFETY = 10.0
"""Seconds before a broken fix shows as a failure instead of a hang (never reached)."""


@pytest.fixture
def prefect_sigterm_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _prefect_sigterm_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sigterm_in_a_callback() -> None:
    asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGTERM)


@pytest.mark.usefixtures("prefect_sigterm_handler")
def test_without_the_watch_asyncio_swallows_the_signal() -> None:
    """The race itself: the signal's exception goes to the loop's exception handler, and
    the coroutine runs on as if nothing happened."""
    seen: list[dict[str, Any]] = []

    async def body() -> str:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        went_on = asyncio.Event()
        _sigterm_in_a_callback()
        loop.call_soon(went_on.set)  # runs after the signal's callback (FIFO)
        await asyncio.wait_for(went_on.wait(), SAFETY)
        return "went on"

    assert asyncio.run(body()) == "went on"
    assert [type(c.get("exception")) for c in seen] == [TerminationSignal]


@pytest.mark.usefixtures("prefect_sigterm_handler")
def test_the_signal_cancels_the_watched_task_then_is_raised_from_it() -> None:
    events: list[str] = []
    handlers: list[object] = []

    async def batch() -> None:
        async with stop_signals_reach():
            try:
                _sigterm_in_a_callback()
                await asyncio.wait_for(asyncio.Event().wait(), SAFETY)
                events.append("not stopped")
            except asyncio.CancelledError:
                events.append("cancelled")  # the engine's cleanup runs here
                await asyncio.sleep(0)  # and may still await (cancel the remote runs)
                events.append("cleaned up")
                raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handlers.append(loop.get_exception_handler())
        try:
            await batch()
        finally:
            handlers.append(loop.get_exception_handler())

    with pytest.raises(TerminationSignal) as raised:
        asyncio.run(main())
    assert raised.value.signal == signal.SIGTERM
    assert events == ["cancelled", "cleaned up"]
    assert handlers == [None, None]  # the loop's handler is put back


@pytest.mark.usefixtures("prefect_sigterm_handler")
def test_two_batches_in_one_loop_both_stop_and_other_errors_still_reach_the_handler() -> None:
    """Two watched tasks share the loop's handler; an ordinary callback error is passed
    to the handler that was there before, and stops nothing."""
    seen: list[object] = []
    stopped: list[str] = []

    async def batch(name: str, ready: asyncio.Event) -> None:
        async with stop_signals_reach():
            try:
                ready.set()
                await asyncio.wait_for(asyncio.Event().wait(), SAFETY)
            except asyncio.CancelledError:
                stopped.append(name)
                raise

    def broken_callback() -> None:
        raise ValueError("an ordinary bug in a callback")

    async def main() -> list[BaseException | None]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen.append(context.get("exception")))
        ready_a, ready_b = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(batch("a", ready_a))
        b = asyncio.create_task(batch("b", ready_b))
        await ready_a.wait()
        await ready_b.wait()
        loop.call_soon(broken_callback)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert not a.done() and not b.done()
        _sigterm_in_a_callback()
        await asyncio.wait({a, b}, timeout=SAFETY)
        return [a.exception(), b.exception()]

    errors = asyncio.run(main())
    assert sorted(stopped) == ["a", "b"]
    assert [type(e) for e in errors] == [TerminationSignal, TerminationSignal]
    assert [type(e) for e in seen] == [ValueError]


@pytest.mark.usefixtures("prefect_sigterm_handler")
def test_nested_in_the_same_task_the_outer_block_raises_the_signal() -> None:
    """A wait task inside a batch's task, say: one cancellation, one raise, at the outer."""
    unwound: list[str] = []

    async def main() -> None:
        async with stop_signals_reach():
            try:
                async with stop_signals_reach():
                    try:
                        _sigterm_in_a_callback()
                        await asyncio.wait_for(asyncio.Event().wait(), SAFETY)
                    finally:
                        unwound.append("inner")
            finally:
                unwound.append("outer")

    with pytest.raises(TerminationSignal):
        asyncio.run(main())
    assert unwound == ["inner", "outer"]
