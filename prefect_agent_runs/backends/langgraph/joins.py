"""Joins: how long one join waits, and the bulk check of threads whose join answered."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from prefect_agent_runs.backends.langgraph.core import LangGraphCore
from prefect_agent_runs.http import RetryMode

__all__ = ["CONFIRM_MAX_THREADS", "CONFIRM_WINDOW_SECONDS", "JOIN_CHUNK_SECONDS", "StatusCheck"]

JOIN_CHUNK_SECONDS = 300.0
"""Longest single join request; a longer wait re-joins (a proxy may cut idle requests)."""
JOIN_VALUES_KEPT = 4096
"""Join answers kept for ``get_result`` (the oldest are dropped; a dropped one costs a
``GET /threads/{id}/state`` if its result is asked for)."""
SEARCH_PAGE = 1000
"""Threads per page of a batch's bulk lookup (``POST /threads/search``)."""
WATCH_CHUNK = 1000
"""Threads asked about in one request of a bulk sweep (``watch_many``)."""
WATCH_OTHER_SECONDS = 1.0
"""How often a bulk sweep also looks for runs that ended other than in success."""
CONFIRM_WINDOW_SECONDS = 0.1
"""How long a finished join waits for others to share one status check."""
CONFIRM_MAX_THREADS = 256
"""Threads checked by one status check at most."""


class StatusCheck:
    """Checks in bulk which threads are ``interrupted`` after their joins answered values.

    A join answers the same values for a run that succeeded and for one cancelled from
    elsewhere in mid-run. The thread's status tells them apart, and one ``POST
    /threads/search {ids, status: "interrupted"}`` answers for every run that finished
    within ``CONFIRM_WINDOW_SECONDS`` (usually with an empty list).
    """

    def __init__(self, client: LangGraphCore) -> None:
        self.client = client
        self.pending: dict[str, list[asyncio.Future[bool]]] = {}
        self.flusher: asyncio.Task[None] | None = None
        self.full = asyncio.Event()

    async def interrupted(self, thread_id: str) -> bool:
        """Whether the thread is interrupted (checked with others in one search)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.setdefault(thread_id.lower(), []).append(future)
        if len(self.pending) >= CONFIRM_MAX_THREADS:
            self.full.set()
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            await asyncio.wait_for(self.full.wait(), CONFIRM_WINDOW_SECONDS)
        except asyncio.TimeoutError:
            pass
        batch, self.pending, self.flusher = self.pending, {}, None
        self.full.clear()
        try:
            body = await self.client.transport.request_json(
                "POST",
                "/threads/search",
                action=f"check the status of {len(batch)} finished thread(s)",
                json={
                    "ids": list(batch),
                    "status": "interrupted",
                    "select": ["thread_id"],
                    "limit": len(batch),
                },
                mode=RetryMode.IDEMPOTENT,
            )
            if not isinstance(body, list):
                raise self.client._bad_shape("a list of threads", body)
            stopped = {str(t.get("thread_id", "")).lower() for t in body if isinstance(t, dict)}
        except BaseException as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for thread_id, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(thread_id in stopped)


def _answers_success(values: Mapping[str, Any]) -> bool:
    """Whether a join's answer is a finished run's values (not an error, interrupt or {})."""
    return bool(values) and "__error__" not in values and "__interrupt__" not in values


def _join_error(values: Mapping[str, Any] | None) -> str | None:
    """The error a join reported for a failed run (``{"__error__": {error, message}}``)."""
    err = values.get("__error__") if values else None
    if isinstance(err, Mapping):
        kind, message = err.get("error"), err.get("message")
        return f"{kind}: {message}" if kind and message else str(message or kind or err)
    return None
