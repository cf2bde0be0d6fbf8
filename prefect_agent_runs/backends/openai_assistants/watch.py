"""A run watched on its create's own event stream (``stream: true``): the batch path.

:meth:`~.client.AssistantsClient.create_and_wait` creates the thread (retried like a
read: at worst an empty thread is left behind), then the run with ``stream: true``. The
answer is an SSE stream that carries the run's life: ``thread.run.created`` (the run
exists), its status changes, the ``thread.message.completed`` messages it wrote, its end,
then ``done``. So a run costs two requests: no polls, no messages list.

:class:`CreateStream` reads that stream in a task of its own and keeps what it saw:

* until ``thread.run.created`` the create is *in flight*: a failure there (a timeout, a
  5xx, a dropped connection, a stream that ends first) is ambiguous and is reconciled by
  the create skeleton (:func:`~prefect_agent_runs.backends.create.create_reconciled`):
  the thread's runs are looked up by the create's marker before anything is resent;
* after it, the stream is the run's observation: :meth:`CreateStream.step` is a step of
  the one wait engine (:func:`~prefect_agent_runs.waiting.wait_for_terminal`), which keeps
  the deadline, cancels the remote run on timeout or cancellation (the stream is closed
  first: it holds a connection) and rides out errors. A stream that drops, or that ends on
  ``requires_action``, hands over to the poll step (tool calls are served there, or
  ``RunRequiresAction`` is raised, as for any wait).

Memory: a stream keeps only its own run's completed messages, and hands them to the
client once the run ended (for ``get_result``), never more than one list per run alive or
not yet collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

import anyio

from prefect_agent_runs.backends.openai_assistants.wire import _stream_error
from prefect_agent_runs.backends.sse import RunEvent, read_events
from prefect_agent_runs.errors import TransportError
from prefect_agent_runs.models import Run, RunStatus
from prefect_agent_runs.timing import Sleep
from prefect_agent_runs.waiting import Observation, Step

if TYPE_CHECKING:
    from prefect_agent_runs.backends.openai_assistants.core import AssistantsCore

__all__ = ["STREAM_STEP_SECONDS", "CreateStream"]

logger = logging.getLogger("prefect_agent_runs.backends.openai_assistants")

STREAM_STEP_SECONDS = 0.1
"""Real seconds one observation waits for the stream to report the end before it hands
back to the wait engine, which then sleeps (on its clock, waking at once when the stream
ends) and observes again. Short, so that the engine's clock moves on while runs stream,
also an injected test clock that moves only when the engine sleeps."""


DRAIN_SECONDS = 1.0
"""Longest real wait for the end of a stream's body after its ``done`` event (read to its
end, the connection goes back to the pool; else it is closed)."""


class CreateStream:
    """The event stream of one streamed create, read in a task of its own.

    Args:
        client: The Assistants client (its transport, ``to_run``, ``backend``).
        path: The thread's runs path (ids encoded).
        payload: The CreateRunRequest body (``stream: true`` is added).
        action: The create's name in messages.
        read_timeout: Longest silence between two chunks of the stream; after it, the
            stream counts as dropped (then the run is polled).
    """

    def __init__(
        self,
        client: AssistantsCore,
        path: str,
        payload: dict[str, Any],
        *,
        action: str,
        read_timeout: float | None,
    ) -> None:
        self.client = client
        self.path = path
        self.payload = {**payload, "stream": True}
        self.action = action
        self.read_timeout = read_timeout
        self.run: Run | None = None
        """The run as the stream last reported it."""
        self.final: Run | None = None
        """The state the stream ended the run on (terminal, or ``requires_action``)."""
        self.messages: list[dict[str, Any]] = []
        """The run's completed messages (``thread.message.completed``), in stream order."""
        self.error: BaseException | None = None
        """Why the stream stopped early (after the run was known), if it did."""
        self.ended = asyncio.Event()
        self._known: asyncio.Future[Run] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the create --------------------------------------------------------------------

    async def open(self) -> Run:
        """Send the create and read its stream until the run exists.

        Sends exactly one request (the transport resends none: a stream is a create).

        Returns:
            The run, as ``thread.run.created`` reported it; the stream is read on in the
            background from then on.

        Raises:
            ApiError: The server refused the create (a 400 "already has an active run"
                is the caller's to adopt), or answered an error status or event first.
            TransportError: The stream broke, or ended, before the run was reported.
        """
        await self.aclose()  # a previous attempt's stream, if any
        self.run = self.final = None
        self.messages = []
        self.error = None
        self.ended = asyncio.Event()
        known: asyncio.Future[Run] = asyncio.get_running_loop().create_future()
        self._known = known
        self._task = asyncio.ensure_future(self._read(known))
        try:
            return await asyncio.shield(known)
        except BaseException:
            await self.aclose()  # the connection is given back before any lookup
            raise

    async def _read(self, known: asyncio.Future[Run]) -> None:
        client = self.client
        backend = client.backend

        def check(event: RunEvent) -> None:
            if event.event == "error":
                raise _stream_error(backend, self.action, event.data, 200)

        events = cast(
            AsyncGenerator[RunEvent, None],
            read_events(
                client.transport,
                "POST",
                self.path,
                action=self.action,
                json_body=self.payload,
                check=check,
                # no is_end: after `done` the answer is read to its end, so that its
                # connection goes back to the pool (a body left unread closes it)
                timeout=self.read_timeout,
            ),
        )
        failure: BaseException | None = None
        closed = False
        try:
            async for event in events:
                self._take(event, known)
        except asyncio.CancelledError:
            closed = True
            failure = TransportError(
                f"{backend}: {self.action}: the stream was closed before the run was "
                "reported (the server may have created it)",
                backend=backend,
            )
            raise
        except Exception as exc:
            failure = exc
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()
            if not known.done():
                known.set_exception(
                    failure
                    or TransportError(
                        f"{backend}: {self.action}: the event stream ended before the run "
                        "was reported (the server may have created it)",
                        backend=backend,
                    )
                )
            elif self.final is None and not closed:
                self.error = failure or TransportError(
                    f"{backend}: {self.action}: the event stream ended before the run did",
                    backend=backend,
                )
                logger.info(
                    "%s: the stream of %s stopped before the run ended (%s); polling it",
                    backend,
                    self.run.describe() if self.run else self.action,
                    self.error,
                )
            self.ended.set()

    def _take(self, event: RunEvent, known: asyncio.Future[Run]) -> None:
        data = event.data
        name = event.event
        if name == "done" or data == "[DONE]":
            self.ended.set()  # the wait goes on at once; the body's end is read meanwhile
            return
        if not isinstance(data, dict):
            return
        if name.startswith("thread.run.") and data.get("object") == "thread.run":
            if self.run is not None and data.get("id") != self.run.id:
                return  # not this create's run (a server would not send it)
            run = self.client.to_run(data)
            self.run = run
            if not known.done():
                known.set_result(run)
            if run.status.is_terminal or run.status is RunStatus.REQUIRES_ACTION:
                self.final = run
        elif (
            name == "thread.message.completed"
            and self.run is not None
            and data.get("run_id") == self.run.id
        ):
            self.messages.append(data)

    async def aclose(self) -> None:
        """Stop reading and close the stream (its connection is given back)."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done() and self.ended.is_set():
            # after `done`: the end of the body is on its way (the connection is reused)
            with anyio.CancelScope(shield=True):
                await asyncio.wait({task}, timeout=DRAIN_SECONDS)
        if not task.done():
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(task, return_exceptions=True)
        known = self._known
        if known is not None and known.done() and not known.cancelled():
            known.exception()  # retrieved: no "exception was never retrieved" warning

    # -- the wait ------------------------------------------------------------------------

    def saw_end(self, run: Run) -> bool:
        """True when the stream itself reported ``run``'s terminal state."""
        final = self.final
        return final is not None and final.id == run.id and final.status.is_terminal

    def step(self, poll: Step) -> Step:
        """The observation step of the wait: the stream, then ``poll`` once it stopped.

        Args:
            poll: The poll step (a GET of the run, tool calls served there).
        """

        async def step(remaining: float | None) -> Observation:
            if not self.ended.is_set():
                wait = (
                    STREAM_STEP_SECONDS
                    if remaining is None
                    else min(remaining, STREAM_STEP_SECONDS)
                )
                with anyio.move_on_after(wait):
                    await self.ended.wait()
            if not self.ended.is_set():
                assert self.run is not None
                return Observation(self.run, poll_after_seconds=None)  # the engine backs off
            final = self.final
            if final is not None and final.status.is_terminal:
                return Observation(final)
            return await poll(remaining)  # dropped, or requires_action: the poll step

        return step

    def sleep(self, sleep: Sleep) -> Sleep:
        """``sleep``, cut short when the stream ends (the end is observed at once)."""

        async def wake_early(seconds: float) -> None:
            if self.ended.is_set():
                await sleep(seconds)
                return
            sleeper = asyncio.ensure_future(sleep(seconds))
            waker = asyncio.ensure_future(self.ended.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, waker):
                    task.cancel()

        return wake_early
