"""The Assistants emulator's state: threads, messages, assistants, and the shared helpers."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from prefect_agent_runs.testing._faults import Faults
from prefect_agent_runs.testing._serve import ServedApp
from prefect_agent_runs.testing.assistants.records import (
    _DUMMY,
    _MESSAGE_KEYS,
    RecordedRequest,
    _Call,
    _new_id,
    _Run,
    _StreamDrops,
    _Thread,
)
from prefect_agent_runs.testing.assistants.validate import (
    ApiError,
    check_attachments,
    check_metadata,
    check_tool_resources,
)

__all__ = ["EmulatorState"]


class EmulatorState(ServedApp):
    """Threads, messages and assistants, and the helpers every handler uses."""

    run_seconds: float
    queue_seconds: float
    outcome: str
    cancel_seconds: float
    expires_seconds: float
    poll_after_ms: int | None
    api_key: str | None
    retired: bool
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    model: str
    requests: list[RecordedRequest]
    _lock: threading.RLock
    _faults: Faults | None
    _stream_drops: _StreamDrops | None
    compress_streams: bool
    _threads: dict[str, _Thread]
    _runs: dict[str, _Run]
    _assistants: dict[str, dict[str, Any]]

    def _json(
        self,
        obj: Any,
        status: int,
        record: RecordedRequest,
        headers: dict[str, str] | None = None,
    ) -> Response:
        record.response_json = obj
        return JSONResponse(obj, status_code=status, headers=headers)

    def _wall(self, run: _Run, mono: float) -> int:
        return int(run.wall0 + (mono - run.t0))

    def _now(self, run: _Run) -> float:
        return self.clock() + run.skew

    def _thread_rec(self, thread_id: str) -> _Thread:
        thread = self._threads.get(thread_id)
        if thread is None:
            raise ApiError(404, f"No thread found with id '{thread_id}'.")
        return thread

    def _run_response(self, run: _Run, record: RecordedRequest) -> Response:
        headers = {}
        if self.poll_after_ms is not None:
            headers["openai-poll-after-ms"] = str(self.poll_after_ms)
        return self._json(copy.deepcopy(run.data), 200, record, headers)

    @staticmethod
    def _object_body(
        call: _Call, allowed: frozenset[str], *, required: bool = False
    ) -> dict[str, Any]:
        body = call.body
        if body is None:
            if required:
                raise ApiError(400, "Missing required body.")
            return {}
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(
                400,
                f"Unrecognized request argument supplied: {unknown[0]}",
                param=unknown[0],
                code="unknown_parameter",
            )
        return body

    @staticmethod
    def _require(body: dict[str, Any], name: str) -> Any:
        if body.get(name) is None:
            raise ApiError(
                400,
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
        return body[name]

    def _assistant_defaults(self, assistant_id: Any) -> dict[str, Any]:
        if not isinstance(assistant_id, str) or not assistant_id.startswith("asst_"):
            raise ApiError(404, f"No assistant found with id '{assistant_id}'.")
        return self._assistants.get(assistant_id, {})

    def _new_message(
        self,
        thread: _Thread,
        body: dict[str, Any],
        *,
        param: str = "content",
        run_id: str | None = None,
        assistant_id: str | None = None,
        created_at: int | None = None,
    ) -> dict[str, Any]:
        role = self._require(body, "role")
        if role not in ("user", "assistant"):
            raise ApiError(
                400,
                f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.",
                param="role",
                code="invalid_value",
            )
        content = self._require(body, "content")
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": {"value": content, "annotations": []}})
        elif isinstance(content, list) and content:
            for part in content:
                if not isinstance(part, dict) or "type" not in part:
                    raise ApiError(400, f"Invalid '{param}': bad content part.", param=param)
                if part["type"] == "text":
                    text = part.get("text")
                    value = text if isinstance(text, str) else (text or {}).get("value", "")
                    parts.append({"type": "text", "text": {"value": value, "annotations": []}})
                else:
                    parts.append(part)
        else:
            raise ApiError(
                400, f"Invalid '{param}': expected a string or a non-empty array.", param=param
            )
        stamp = int(self.wall_clock()) if created_at is None else created_at
        message = {
            "id": _new_id("msg"),
            "object": "thread.message",
            "created_at": stamp,
            "thread_id": thread.data["id"],
            "status": "completed",
            "incomplete_details": None,
            "completed_at": stamp if role == "assistant" else None,
            "incomplete_at": None,
            "role": role,
            "content": parts,
            "assistant_id": assistant_id,
            "run_id": run_id,
            "attachments": check_attachments(
                body.get("attachments"),
                param.rsplit(".", 1)[0] + ".attachments" if "." in param else "attachments",
            ),
            "metadata": check_metadata(body.get("metadata")),
        }
        thread.messages.append(message)
        return message

    def _new_thread(self, body: dict[str, Any], *, param: str = "tool_resources") -> _Thread:
        metadata = check_metadata(body.get("metadata"))
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise ApiError(400, "Invalid 'messages': expected an array.", param="messages")
        thread = _Thread(
            data={
                "id": _new_id("thread"),
                "object": "thread",
                "created_at": int(self.wall_clock()),
                "tool_resources": check_tool_resources(
                    body.get("tool_resources"), param, vector_store_helpers=True
                ),
                "metadata": metadata,
            }
        )
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ApiError(400, f"Invalid 'messages[{i}]'.", param=f"messages[{i}]")
            self._object_body(_Call("", "", {}, {}, message, _DUMMY), _MESSAGE_KEYS)
            self._new_message(thread, message, param=f"messages[{i}].content")
        self._threads[thread.data["id"]] = thread
        return thread
