"""Reading the Assistants API's answers: run errors, tool calls, list cursors, stream errors."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from prefect_agent_runs.backends.base import (
    ToolHandler,
)
from prefect_agent_runs.backends.openai_assistants.payloads import _timestamp
from prefect_agent_runs.errors import (
    ApiError,
    RateLimited,
    ServerError,
)
from prefect_agent_runs.models import (
    Run,
)

__all__ = ["tool_calls"]

T = TypeVar("T")


def _run_error(raw: Mapping[str, Any]) -> str | None:
    last_error = raw.get("last_error")
    if isinstance(last_error, Mapping):
        code, message = last_error.get("code"), last_error.get("message")
        if code and message:
            return f"{code}: {message}"
        return str(message or code or last_error)
    details = raw.get("incomplete_details")
    if isinstance(details, Mapping) and details.get("reason"):
        return f"incomplete: {details['reason']}"
    return None


def tool_calls(run: Run) -> list[dict[str, Any]]:
    """The tool calls a ``requires_action`` run waits for (RunToolCallObjects).

    Args:
        run: The run.
    """
    action = run.raw.get("required_action")
    if not isinstance(action, Mapping):
        return []
    submit = action.get("submit_tool_outputs")
    calls = submit.get("tool_calls") if isinstance(submit, Mapping) else None
    return [dict(c) for c in calls or [] if isinstance(c, Mapping)]


def _tool_name(call: Mapping[str, Any]) -> str:
    function = call.get("function")
    if isinstance(function, Mapping) and function.get("name"):
        return str(function["name"])
    return str(call.get("type") or call.get("id") or "tool")


def _expires_text(run: Run) -> str:
    expires = _timestamp(run.raw.get("expires_at"))
    return f" (it expires at {expires.isoformat()})" if expires else ""


async def _call_handler(handler: ToolHandler, call: dict[str, Any]) -> str:
    result = handler(call)
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, str):
        result = json.dumps(result, default=str)
    return result


def _next_cursor(
    meta: Mapping[str, Any],
    items: Sequence[T],
    item_id: Callable[[T], str],
    *,
    limit: int,
    backwards: bool,
) -> str | None:
    """Where the next page of an Assistants list starts (wire-contracts §6.5), or None.

    The cursor is the answer's ``last_id`` (``first_id`` when paging with ``before``),
    else the last (first) item's id. There is a next page on ``has_more: true``; when the
    server omits ``has_more``, when the page is full.
    """
    if not items:
        return None
    has_more = meta.get("has_more")
    more = bool(has_more) if isinstance(has_more, bool) else len(items) >= limit
    if not more:
        return None
    named = meta.get("first_id") if backwards else meta.get("last_id")
    if isinstance(named, str) and named:
        return named
    return item_id(items[0] if backwards else items[-1])


def _stream_error(backend: str, action: str, data: Any, status: int) -> ApiError:
    error = data.get("error") if isinstance(data, Mapping) else None
    error = error if isinstance(error, Mapping) else data
    message = error.get("message") if isinstance(error, Mapping) else None
    code = error.get("code") or error.get("type") if isinstance(error, Mapping) else None
    text = message or json.dumps(data, default=str)[:300]
    cls: type[ApiError] = RateLimited if code == "rate_limit_exceeded" else ServerError
    return cls(
        f"{backend}: {action}: the stream reported an error: {text}",
        status_code=status,
        code=str(code) if code else None,
        backend=backend,
    )
