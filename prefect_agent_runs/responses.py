"""Reading error answers: the server's message, code and field errors, redacted.

:func:`error_from_response` turns any error answer into the matching
:class:`~prefect_agent_runs.errors.ApiError` subclass, also for bodies that are not JSON
(an HTML 502 page from a proxy), and never lets a secret through (:func:`redact`). The
error shapes of the platforms are read by :func:`parse_error_body`; a backend whose
server answers another shape gives its own :data:`ErrorParser` (the client's
``error_parser``).
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import httpx

from prefect_agent_runs.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)

__all__ = [
    "SNIPPET_CHARS",
    "ErrorParser",
    "error_from_response",
    "parse_error_body",
    "parse_retry_after",
    "redact",
    "snippet",
]

SNIPPET_CHARS = 300
"""The longest snippet of a server's answer quoted in an error message."""

ErrorParser: TypeAlias = Callable[[Any], "tuple[str | None, str | None, dict[str, list[str]]]"]
"""Reads (message, code, field errors) from a decoded JSON error body."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (and every bearer token) in ``text`` with ``***``.

    Args:
        text: Any text that may be shown to a person or logged.
        secrets: The secret values to hide (short values, under 4 characters, are ignored
            so that a test key like "x" does not mangle every message).
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return re.sub(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+", r"\1***", text)


def snippet(text: str, secrets: Iterable[str]) -> str:
    """``text`` on one line, redacted, cut to :data:`SNIPPET_CHARS`.

    Args:
        text: Any text from a server.
        secrets: The secret values to hide.
    """
    # redact before cutting: a secret straddling the cut must not leave a visible prefix
    flat = redact(" ".join(text.split()), secrets)
    if len(flat) > SNIPPET_CHARS:
        flat = flat[:SNIPPET_CHARS] + "…"
    return flat


def parse_retry_after(
    headers: httpx.Headers, *, now: Callable[[], float] = time.time
) -> float | None:
    """The delay a response asks for, in seconds: ``retry-after-ms``, then ``Retry-After``.

    ``Retry-After`` may be seconds or an HTTP date. Returns None when absent or unusable.
    """
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            delay = float(ms) / 1000.0
            return delay if delay >= 0 else None
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        delay = float(value)
        return delay if delay >= 0 else None  # a negative delay is garbage: back off instead
    except ValueError:
        pass  # not seconds: an HTTP date, or garbage
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, parsed.timestamp() - now())


def parse_error_body(body: Any) -> tuple[str | None, str | None, dict[str, list[str]]]:
    """Pull (message, code, field_errors) out of the error shapes the platforms use.

    Reads OpenAI / Azure / Linkage ``{"error": {...}}``, ``{"message": ...}`` (Cortex,
    project threads), FastAPI / LangGraph ``detail`` (string or validation list) and
    ASP.NET ProblemDetails ``errors``.

    Args:
        body: The decoded JSON body (any type).
    """
    message: str | None = None
    code: str | None = None
    fields: dict[str, list[str]] = {}
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # OpenAI / Azure, Linkage
            message = _str_or_none(err.get("message"))
            code = _str_or_none(err.get("code")) or _str_or_none(err.get("type"))
        elif isinstance(err, str):
            message = err
        if message is None:
            message = _str_or_none(body.get("message"))  # Cortex, project threads
        detail = body.get("detail")
        if isinstance(detail, str):  # FastAPI / LangGraph, problem+json
            title = body.get("title")
            message = message or (f"{title}: {detail}" if isinstance(title, str) else detail)
        elif isinstance(detail, list):  # FastAPI validation errors
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                    fields.setdefault(loc or "body", []).append(str(item.get("msg", item)))
            message = message or "; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items())
        errors = body.get("errors")
        if isinstance(errors, dict):  # ASP.NET ProblemDetails
            for name, msgs in errors.items():
                fields[str(name)] = [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])]
            message = message or _str_or_none(body.get("title"))
            if fields:
                message = f"{message or 'invalid request'} ({_fields_text(fields)})"
        if message is None and isinstance(body.get("title"), str):
            message = body["title"]
    elif isinstance(body, str):
        message = body
    return message, code, fields


def _fields_text(fields: Mapping[str, list[str]]) -> str:
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items())


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_STATUS_CLASSES: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: BadRequest,
    429: RateLimited,
}

_HINTS: dict[type[ApiError], str] = {
    Unauthorized: "check the api_key / token of the credentials block",
    Forbidden: "the credentials are not allowed to do this; check their scope or project",
    NotFound: "check the id and the base_url",
    RateLimited: "lower max_concurrency or wait for the quota to reset",
    ServerError: "the server or a proxy in front of it failed; retry later",
}


def error_from_response(
    response: httpx.Response,
    *,
    backend: str,
    action: str,
    secrets: Iterable[str] = (),
    parser: ErrorParser | None = None,
) -> ApiError:
    """Build the :class:`ApiError` subclass that describes an error response.

    Never raises on an unusual body: a non-JSON body (an HTML 502 page from a proxy) is
    reported by a short snippet.

    Args:
        response: The error response (its body must have been read).
        backend: Backend name, first word of the message.
        action: What was being done, e.g. ``"get run run_1 on thread t_1"``.
        secrets: Values to redact from the message.
        parser: Reads the JSON body (default :func:`parse_error_body`).
    """
    secrets = list(secrets)
    status = response.status_code
    text = response.text
    body: Any = None
    is_json = False
    if text.strip():
        try:
            body = json.loads(text)
            is_json = True
        except ValueError:
            body = None
    message, code, fields = (parser or parse_error_body)(body) if is_json else (None, None, {})
    cls = _STATUS_CLASSES.get(status) or (ServerError if status >= 500 else ApiError)
    if not is_json and text.strip() and 200 <= status < 300:
        cls = ServerError
    said = (
        message
        if message
        else (f"non-JSON body: {snippet(text, secrets)}" if text.strip() else "empty body")
    )
    request_id = response.headers.get("x-request-id") or response.headers.get("x-correlation-id")
    parts = [f"{backend}: {action} failed: HTTP {status} {response.reason_phrase}".rstrip()]
    parts.append(f": {said}")
    if request_id:
        parts.append(f" (request id {request_id})")
    hint = _HINTS.get(cls)
    if hint:
        parts.append(f". {hint}")
    text_message = redact("".join(parts), secrets)
    kwargs: dict[str, Any] = {
        "status_code": status,
        "code": code,
        "request_id": request_id,
        "backend": backend,
        "body_snippet": snippet(text, secrets) if text else None,
    }
    if cls is BadRequest:
        return BadRequest(text_message, field_errors=fields, **kwargs)
    if cls is RateLimited:
        return RateLimited(text_message, retry_after=parse_retry_after(response.headers), **kwargs)
    return cls(text_message, **kwargs)
