"""What the Assistants emulator keeps: its records, scripts, faults and list paging."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from prefect_agent_runs.testing.assistants.validate import ApiError

__all__ = [
    "OUTCOMES",
    "TERMINAL_STATUSES",
    "FakeClock",
    "RecordedRequest",
]

OUTCOMES = ("completed", "failed", "expired", "incomplete", "requires_action", "never")
"""Outcomes a run can be scripted to end with."""

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
"""Run statuses after which nothing changes."""

_ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
_PREFIXES = ("/v1", "/openai")
_REDACTED_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})
_SCRIPT_KEYS = frozenset(
    {"seconds", "queue_seconds", "outcome", "tool", "tool_arguments", "cancel_seconds", "error"}
)

_RUN_KEYS = frozenset(
    {
        "additional_instructions", "additional_messages", "assistant_id", "instructions",
        "max_completion_tokens", "max_prompt_tokens", "metadata", "model",
        "parallel_tool_calls", "reasoning_effort", "response_format", "stream",
        "temperature", "tool_choice", "tools", "top_p", "truncation_strategy",
    }
)  # fmt: skip
_THREAD_AND_RUN_KEYS = frozenset(
    {
        "assistant_id", "instructions", "max_completion_tokens", "max_prompt_tokens",
        "metadata", "model", "parallel_tool_calls", "response_format", "stream",
        "temperature", "thread", "tool_choice", "tool_resources", "tools", "top_p",
        "truncation_strategy",
    }
)  # fmt: skip
_THREAD_KEYS = frozenset({"messages", "metadata", "tool_resources"})
_MESSAGE_KEYS = frozenset({"attachments", "content", "metadata", "role"})
_ASSISTANT_KEYS = frozenset(
    {
        "description", "instructions", "metadata", "model", "name", "reasoning_effort",
        "response_format", "temperature", "tool_resources", "tools", "top_p",
    }
)  # fmt: skip

_FAULT_MESSAGES = {
    429: ("Rate limit reached for requests. Please try again later.", "requests",
          "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!",
          "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}  # fmt: skip


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class FakeClock:
    """A manual monotonic clock for tests: pass it as ``clock=`` and call :meth:`advance`.

    Args:
        start: The initial reading.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Return the current reading."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward.

        Args:
            seconds: How far to move it.
        """
        with self._lock:
            self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """An async sleep on this clock: advance it by ``seconds`` and let others run.

        Pass it with the clock to :func:`prefect_agent_runs.timing.use_clock`, or as a
        client's ``sleep=``: waits, backoffs and deadlines pass without real time.

        Args:
            seconds: How far to move the clock.
        """
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


@dataclass
class RecordedRequest:
    """One request the emulator received, with its answer.

    Attributes:
        method: HTTP method.
        path: Request path as received (with the ``/v1`` prefix).
        query: Query parameters (last value wins).
        headers: Lower-cased headers; ``authorization`` / ``api-key`` values are redacted.
        json: The decoded JSON body, or ``None``.
        status: The status answered.
        response_json: The JSON body answered (``None`` for HTML and SSE answers).
        stream_events: ``(event, data)`` pairs of an SSE answer, as sent.
        fault: The status of an injected fault, if one was injected.
        dropped: The SSE answer was cut off by :meth:`AssistantsEmulator.drop_streams`.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    status: int | None = None
    response_json: Any = None
    stream_events: list[tuple[str, Any]] = field(default_factory=list)
    fault: int | None = None
    dropped: bool = False

    @property
    def route(self) -> str:
        """The path without the ``/v1`` (or Azure ``/openai``) prefix."""
        return _strip_prefix(self.path)


@dataclass
class _StreamDrops:
    rate: float
    after_event: str
    rng: random.Random


@dataclass
class _Script:
    seconds: float
    queue_seconds: float
    outcome: str
    cancel_seconds: float
    tool: str = "get_weather"
    tool_arguments: dict[str, Any] | None = None
    error: str = "The emulator was scripted to fail this run."


@dataclass
class _Run:
    data: dict[str, Any]
    thread_id: str
    t0: float
    wall0: float
    script: _Script
    prompt: str
    skew: float = 0.0
    after_tools_at: float | None = None
    cancel_at: float | None = None
    tool_outputs: list[str] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Thread:
    data: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    runs: list[_Run] = field(default_factory=list)


def _strip_prefix(path: str) -> str:
    for prefix in _PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return path[len(prefix) :] or "/"
    return path


def _text_of(message: dict[str, Any]) -> str:
    parts = [p["text"]["value"] for p in message.get("content", []) if p.get("type") == "text"]
    return "\n".join(parts)


def _sse(event: str, data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"event: {event}\ndata: {payload}\n\n"


_Handler = Callable[["_Call"], Awaitable[Response]]


@dataclass
class _Call:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    record: RecordedRequest


_DUMMY = RecordedRequest("", "", {}, {}, None)


def _paginate(
    items: list[dict[str, Any]],
    query: dict[str, str],
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Cursor pagination like OpenAI's: ``limit``, ``order``, ``after``, ``before``."""
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ApiError(
            400, f"Invalid 'limit': expected an integer, got '{raw_limit}'.", param="limit",
            code="invalid_type",
        ) from None  # fmt: skip
    if not 1 <= limit <= 100:
        code = "integer_below_min_value" if limit < 1 else "integer_above_max_value"
        raise ApiError(
            400,
            f"Invalid 'limit': integer {'below minimum' if limit < 1 else 'above maximum'} "
            f"value. Expected a value {'>= 1' if limit < 1 else '<= 100'}, but got {limit} "
            "instead.",
            param="limit",
            code=code,
        )
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(
            400,
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
            param="order",
            code="invalid_value",
        )
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [item["id"] for item in ordered]
    for name in ("after", "before"):
        cursor = query.get(name)
        if cursor is None:
            continue
        if cursor not in ids:
            raise ApiError(
                400, f"Invalid '{name}': no object with id '{cursor}' in this list.", param=name
            )
        index = ids.index(cursor)
        if name == "after":
            ordered, ids = ordered[index + 1 :], ids[index + 1 :]
        else:
            ordered, ids = ordered[:index], ids[:index]
    if keep is not None:
        ordered = [item for item in ordered if keep(item)]
    backwards = "before" in query and "after" not in query
    page = ordered[-limit:] if backwards else ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > limit,
    }
