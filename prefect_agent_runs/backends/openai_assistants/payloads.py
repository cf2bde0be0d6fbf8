"""What the Assistants client sends: request bodies, OpenAI's input limits, message text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

from prefect_agent_runs.backends.create import CREATE_ID_KEY
from prefect_agent_runs.errors import (
    ValidationError,
)
from prefect_agent_runs.models import (
    RunRequest,
)

__all__ = [
    "RUN_OPTIONS",
    "THREAD_OPTIONS",
    "AssistantsPayloads",
    "active_run_id",
    "message_text",
]

T = TypeVar("T")

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 512
MESSAGE_MAX_CHARS = 256_000
"""Longest message content the Assistants API accepts (CreateMessageRequest)."""
LIST_MAX_LIMIT = 100
FIND_SCAN_LIMIT = 100
"""Most runs of a thread inspected when looking a run up by its metadata."""

# Fields of CreateRunRequest that RunRequest.options may carry through unchanged.
RUN_OPTIONS = frozenset(
    {
        "model",
        "reasoning_effort",
        "additional_instructions",
        "additional_messages",
        "tools",
        "temperature",
        "top_p",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
)
"""Run-create fields that ``RunRequest.options`` may pass through."""
# Options that belong to the thread we create for a request without a thread.
THREAD_OPTIONS = frozenset({"tool_resources"})
"""Thread-create fields that ``RunRequest.options`` may pass through."""

_ACTIVE_RUN_PATTERNS = (
    re.compile(r"already has an active run\s+['\"]?([A-Za-z0-9_\-]+)"),
    re.compile(r"while a run\s+['\"]?([A-Za-z0-9_\-]+)['\"]?\s+is active"),
)


def _timestamp(value: Any) -> datetime | None:
    """Unix seconds (int or float) to an aware UTC datetime; anything else to None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def active_run_id(message: str) -> str | None:
    """The run id named in an "already has an active run run_X" (or "while a run run_X is
    active") error message, or None.

    Args:
        message: The server's error message (or a message that contains it).
    """
    for pattern in _ACTIVE_RUN_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1).rstrip(".")
    return None


def message_text(message: Mapping[str, Any]) -> str | None:
    """The text of a thread message: its ``text`` content parts, concatenated.

    Args:
        message: A MessageObject.

    Returns:
        The text, or None when the message has no text part.
    """
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text":
            continue
        text = part.get("text")
        if isinstance(text, Mapping):
            value = text.get("value")
            if isinstance(value, str):
                texts.append(value)
        elif isinstance(text, str):
            texts.append(text)
    return "".join(texts) if texts else None


class AssistantsPayloads:
    """The request bodies of :class:`~.client.AssistantsClient` (checked before sending)."""

    backend: ClassVar[str]

    def _invalid(self, message: str) -> ValidationError:
        return ValidationError(f"{self.backend}: {message}", backend=self.backend)

    def check_metadata(self, metadata: Mapping[str, Any], *, what: str = "metadata") -> None:
        """Check OpenAI's metadata limits before sending anything.

        At most 16 keys, keys up to 64 characters, values strings of up to 512 characters.

        Args:
            metadata: The metadata about to be sent.
            what: Which metadata, for the message (``"run metadata"``...).

        Raises:
            ValidationError: A limit is exceeded (the message names the key).
        """
        if len(metadata) > METADATA_MAX_KEYS:
            raise self._invalid(
                f"{what} has {len(metadata)} keys; the Assistants API allows at most "
                f"{METADATA_MAX_KEYS} (keys: {sorted(metadata)})"
            )
        for key, value in metadata.items():
            if not isinstance(key, str) or len(key) > METADATA_MAX_KEY_CHARS:
                raise self._invalid(
                    f"{what} key {key!r} is longer than {METADATA_MAX_KEY_CHARS} characters"
                )
            if not isinstance(value, str):
                raise self._invalid(
                    f"{what} key {key!r} has a {type(value).__name__} value; the Assistants "
                    "API accepts only string values (convert it yourself, e.g. json.dumps)"
                )
            if len(value) > METADATA_MAX_VALUE_CHARS:
                raise self._invalid(
                    f"{what} key {key!r} has a value of {len(value)} characters; the "
                    f"Assistants API allows at most {METADATA_MAX_VALUE_CHARS}"
                )

    def _user_messages(self, request: RunRequest) -> list[dict[str, Any]]:
        """The messages a request adds to its thread: ``input["messages"]``, then ``message``."""
        messages: list[dict[str, Any]] = []
        if request.input is not None:
            extra = set(request.input) - {"messages"}
            items = request.input.get("messages")
            if extra or not isinstance(items, list):
                raise self._invalid(
                    "RunRequest.input has no Assistants equivalent except "
                    "{'messages': [{'role': ..., 'content': ...}]}; use message= or "
                    f"options (request key {request.key!r})"
                )
            for item in items:
                if not isinstance(item, Mapping) or "content" not in item:
                    raise self._invalid(
                        f"input messages need 'role' and 'content' (request key {request.key!r})"
                    )
                messages.append({"role": item.get("role", "user"), **dict(item)})
        if request.message is not None:
            messages.append({"role": "user", "content": request.message})
        for message in messages:
            content = message.get("content")
            if isinstance(content, str) and len(content) > MESSAGE_MAX_CHARS:
                raise self._invalid(
                    f"a message of request key {request.key!r} has {len(content):,} characters; "
                    f"the Assistants API allows at most {MESSAGE_MAX_CHARS:,} (nothing was sent)"
                )
        return messages

    def _check_options(self, request: RunRequest, *, new_thread: bool) -> None:
        allowed = RUN_OPTIONS | (THREAD_OPTIONS if new_thread else frozenset())
        unknown = set(request.options) - allowed
        if unknown:
            hint = ""
            if "stream" in unknown:
                hint = " (to stream, use stream_run)"
            elif unknown & THREAD_OPTIONS:
                hint = " (tool_resources belong to the thread: only for a new thread)"
            raise self._invalid(
                f"unknown run option(s) {sorted(unknown)} for request key {request.key!r}; "
                f"allowed: {sorted(allowed)}{hint}"
            )

    def run_payload(
        self,
        request: RunRequest,
        *,
        create_id: str | None = None,
        include_messages: bool = True,
    ) -> dict[str, Any]:
        """The CreateRunRequest body that starts ``request`` on its thread.

        Args:
            request: What to start.
            create_id: The one-off marker put in the run's metadata.
            include_messages: Send the request's messages as ``additional_messages``
                (False when they were put in a thread we just created).

        Returns:
            The JSON body (exposed for tests and dry runs).

        Raises:
            ValidationError: Metadata over OpenAI's limits, or an unknown option.
        """
        self._check_options(request, new_thread=request.thread_id is None)
        metadata = dict(request.metadata)
        if create_id:
            metadata[CREATE_ID_KEY] = create_id
        self.check_metadata(metadata, what="run metadata")
        payload: dict[str, Any] = {"assistant_id": request.assistant_id, "metadata": metadata}
        if request.instructions is not None:
            payload["instructions"] = request.instructions
        options = {k: v for k, v in request.options.items() if k not in THREAD_OPTIONS}
        payload.update(options)
        if include_messages:
            messages = self._user_messages(request)
            if messages:
                payload["additional_messages"] = [
                    *list(options.get("additional_messages") or []),
                    *messages,
                ]
        return payload

    def thread_payload(self, request: RunRequest) -> dict[str, Any]:
        """The CreateThreadRequest body for a request without a thread.

        The thread carries the request's metadata (batch tags included) and its messages.
        """
        metadata = dict(request.metadata)
        self.check_metadata(metadata, what="thread metadata")
        payload: dict[str, Any] = {"metadata": metadata}
        messages = self._user_messages(request)
        if messages:
            payload["messages"] = messages
        if "tool_resources" in request.options:
            payload["tool_resources"] = request.options["tool_resources"]
        return payload

    def thread_and_run_payload(self, request: RunRequest) -> dict[str, Any]:
        """The CreateThreadAndRunRequest body for ``request`` (exposed for tests)."""
        self._check_options(request, new_thread=True)
        if "additional_messages" in request.options or (
            "additional_instructions" in request.options
        ):
            raise self._invalid(
                "additional_messages / additional_instructions are not accepted when a "
                "thread and run are created in one request; use create_run"
            )
        metadata = dict(request.metadata)
        self.check_metadata(metadata, what="run metadata")
        thread = self.thread_payload(request)
        thread.pop("tool_resources", None)
        payload: dict[str, Any] = {
            "assistant_id": request.assistant_id,
            "thread": thread,
            "metadata": metadata,
        }
        if request.instructions is not None:
            payload["instructions"] = request.instructions
        payload.update(request.options)
        return payload
