"""How an emulated run lives: scripts, statuses over the clock, tool calls, SSE events."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from prefect_agent_runs.testing.assistants.records import (
    _ACTIVE,
    _SCRIPT_KEYS,
    OUTCOMES,
    TERMINAL_STATUSES,
    RecordedRequest,
    _new_id,
    _Run,
    _Script,
    _sse,
    _text_of,
    _Thread,
)
from prefect_agent_runs.testing.assistants.state import EmulatorState
from prefect_agent_runs.testing.assistants.validate import ApiError, check_metadata

__all__ = ["EmulatorLifecycle", "StreamDropped"]


class StreamDropped(Exception):
    """Raised inside an SSE answer to cut its connection (:meth:`drop_streams`)."""


def quiet_stream_drops(record: logging.LogRecord) -> bool:
    """A logging filter: uvicorn's traceback of a stream cut on purpose is left out."""
    return not (record.exc_info and isinstance(record.exc_info[1], StreamDropped))


class EmulatorLifecycle(EmulatorState):
    """Runs: started from a script, advanced lazily to the clock on every request."""

    def _drop_stream_after(self, event: str) -> bool:
        """True when the stream that just sent ``event`` is to be cut off now."""
        with self._lock:
            drops = self._stream_drops
            if drops is None or event != drops.after_event:
                return False
            return drops.rng.random() < drops.rate

    def _run_rec(self, thread_id: str, run_id: str) -> _Run:
        self._thread_rec(thread_id)
        run = self._runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise ApiError(404, f"No run found with id '{run_id}'.")
        self._advance(run)
        return run

    def _active_run(self, thread: _Thread) -> _Run | None:
        for run in thread.runs:
            self._advance(run)
            if run.data["status"] in _ACTIVE:
                return run
        return None

    def _script(self, metadata: dict[str, str]) -> _Script:
        script = _Script(
            seconds=self.run_seconds,
            queue_seconds=self.queue_seconds,
            outcome=self.outcome,
            cancel_seconds=self.cancel_seconds,
        )
        raw = metadata.get("emulator")
        if raw is None:
            return script
        try:
            spec = json.loads(raw)
            if not isinstance(spec, dict):
                raise ValueError("not an object")
            unknown = set(spec) - _SCRIPT_KEYS
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            if "outcome" in spec and spec["outcome"] not in OUTCOMES:
                raise ValueError(f"outcome must be one of {list(OUTCOMES)}")
            for key in ("seconds", "queue_seconds", "cancel_seconds"):
                if key in spec:
                    setattr(script, key, float(spec[key]))
            for key in ("outcome", "tool", "error"):
                if key in spec:
                    setattr(script, key, str(spec[key]))
            if "tool_arguments" in spec:
                if not isinstance(spec["tool_arguments"], dict):
                    raise ValueError("tool_arguments must be an object")
                script.tool_arguments = spec["tool_arguments"]
        except (ValueError, TypeError) as exc:
            raise ApiError(
                400,
                f"Invalid 'metadata.emulator' (emulator script): {exc}",
                param="metadata.emulator",
            ) from exc
        return script

    def _start_run(self, thread: _Thread, body: dict[str, Any], *, allow_additional: bool) -> _Run:
        assistant_id = self._require(body, "assistant_id")
        assistant = self._assistant_defaults(assistant_id)
        active = self._active_run(thread)
        if active is not None:
            raise ApiError(
                400,
                f"Thread {thread.data['id']} already has an active run {active.data['id']}.",
            )
        metadata = check_metadata(body.get("metadata"))
        script = self._script(metadata)
        if allow_additional:
            extra = body.get("additional_messages") or []
            if not isinstance(extra, list):
                raise ApiError(400, "Invalid 'additional_messages'.", param="additional_messages")
            for i, message in enumerate(extra):
                if not isinstance(message, dict):
                    raise ApiError(
                        400, "Invalid 'additional_messages'.", param="additional_messages"
                    )
                self._new_message(thread, message, param=f"additional_messages[{i}].content")
        prompt = next((_text_of(m) for m in reversed(thread.messages) if m["role"] == "user"), "")
        instructions = body.get("instructions")
        if instructions is None:
            instructions = assistant.get("instructions") or ""
        if body.get("additional_instructions"):
            instructions = f"{instructions}\n{body['additional_instructions']}".strip()
        t0 = self.clock()
        wall0 = self.wall_clock()
        created = int(wall0)

        def pick(name: str, default: Any) -> Any:
            value = body.get(name)
            return default if value is None else value

        data: dict[str, Any] = {
            "id": _new_id("run"),
            "object": "thread.run",
            "created_at": created,
            "thread_id": thread.data["id"],
            "assistant_id": assistant_id,
            "status": "queued",
            "required_action": None,
            "last_error": None,
            "expires_at": int(created + self.expires_seconds),
            "started_at": None,
            "cancelled_at": None,
            "failed_at": None,
            "completed_at": None,
            "model": pick("model", assistant.get("model") or self.model),
            "instructions": instructions,
            "tools": pick("tools", assistant.get("tools") or []),
            "metadata": metadata,
            "usage": None,
            "incomplete_details": None,
            "max_prompt_tokens": body.get("max_prompt_tokens"),
            "max_completion_tokens": body.get("max_completion_tokens"),
            "truncation_strategy": pick(
                "truncation_strategy", {"type": "auto", "last_messages": None}
            ),
            "tool_choice": pick("tool_choice", "auto"),
            "parallel_tool_calls": pick("parallel_tool_calls", True),
            "response_format": pick("response_format", assistant.get("response_format") or "auto"),
            "temperature": pick("temperature", assistant.get("temperature") or 1.0),
            "top_p": pick("top_p", assistant.get("top_p") or 1.0),
        }
        run = _Run(data=data, thread_id=thread.data["id"], t0=t0, wall0=wall0, script=script,
                   prompt=prompt)  # fmt: skip
        run.events.append(("thread.run.created", copy.deepcopy(data)))
        run.events.append(("thread.run.queued", copy.deepcopy(data)))
        thread.runs.append(run)
        self._runs[data["id"]] = run
        return run  # answered as "queued", as OpenAI does; it advances on the next read

    # -- the lifecycle -----------------------------------------------------------------

    def _set_status(self, run: _Run, status: str) -> None:
        run.data["status"] = status
        run.events.append((f"thread.run.{status}", copy.deepcopy(run.data)))

    def _usage(self, run: _Run, reply: str = "") -> dict[str, int]:
        prompt_tokens = max(1, len(run.prompt.split())) + len(run.tool_outputs)
        completion_tokens = len(reply.split())
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _work_end(self, run: _Run) -> tuple[float, float]:
        """Return (start of in_progress, end of the current work phase) in run time."""
        start = run.t0 + run.script.queue_seconds
        if run.after_tools_at is not None:
            return start, run.after_tools_at + run.script.seconds
        return start, start + run.script.seconds

    def _next_transition(self, run: _Run) -> float | None:
        status = run.data["status"]
        if status in TERMINAL_STATUSES:
            return None
        if run.cancel_at is not None:
            return run.cancel_at + run.script.cancel_seconds
        if status == "requires_action":
            return run.t0 + self.expires_seconds
        start, end = self._work_end(run)
        if self._now(run) < start:
            return start
        if run.script.outcome == "never" and run.after_tools_at is None:
            return None
        return end

    def _advance(self, run: _Run) -> None:
        now = self._now(run)
        data = run.data
        if data["status"] in TERMINAL_STATUSES:
            return
        if run.cancel_at is not None:
            done_at = run.cancel_at + run.script.cancel_seconds
            if now >= done_at:
                data["cancelled_at"] = self._wall(run, done_at)
                data["required_action"] = None
                data["usage"] = self._usage(run)
                self._set_status(run, "cancelled")
            return
        if data["status"] == "requires_action":
            expire_at = run.t0 + self.expires_seconds
            if now >= expire_at:
                data["required_action"] = None
                data["usage"] = self._usage(run)
                self._set_status(run, "expired")
            return
        start, end = self._work_end(run)
        if now < start:
            return
        if data["status"] == "queued":
            data["started_at"] = self._wall(run, start)
            self._set_status(run, "in_progress")
        outcome = run.script.outcome if run.after_tools_at is None else "completed"
        if outcome == "never" or now < end:
            return
        stamp = self._wall(run, end)
        if outcome == "completed":
            reply = f"echo: {run.prompt}"
            if run.tool_outputs:
                reply += f" [tool: {', '.join(run.tool_outputs)}]"
            self._complete_with_message(run, reply, stamp)
        elif outcome == "failed":
            data["failed_at"] = stamp
            data["last_error"] = {"code": "server_error", "message": run.script.error}
            data["usage"] = self._usage(run)
            self._set_status(run, "failed")
        elif outcome == "expired":
            data["usage"] = self._usage(run)
            self._set_status(run, "expired")
        elif outcome == "incomplete":
            data["incomplete_details"] = {"reason": "max_completion_tokens"}
            data["usage"] = self._usage(run)
            self._set_status(run, "incomplete")
        elif outcome == "requires_action":
            arguments = run.script.tool_arguments
            if arguments is None:
                arguments = {"city": run.prompt or "Paris"}
            data["required_action"] = {
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {
                    "tool_calls": [
                        {
                            "id": _new_id("call"),
                            "type": "function",
                            "function": {
                                "name": run.script.tool,
                                "arguments": json.dumps(arguments),
                            },
                        }
                    ]
                },
            }
            self._set_status(run, "requires_action")

    def _complete_with_message(self, run: _Run, reply: str, stamp: int) -> None:
        thread = self._threads.get(run.thread_id)
        data = run.data
        if thread is not None:
            message = self._new_message(
                thread,
                {"role": "assistant", "content": reply},
                run_id=data["id"],
                assistant_id=data["assistant_id"],
                created_at=stamp,
            )
            created = {**copy.deepcopy(message), "status": "in_progress", "content": [],
                       "completed_at": None}  # fmt: skip
            run.events.append(("thread.message.created", created))
            run.events.append(("thread.message.in_progress", copy.deepcopy(created)))
            run.events.append(
                (
                    "thread.message.delta",
                    {
                        "id": message["id"],
                        "object": "thread.message.delta",
                        "delta": {
                            "content": [
                                {
                                    "index": 0,
                                    "type": "text",
                                    "text": {"value": reply, "annotations": []},
                                }
                            ]
                        },
                    },
                )
            )
            run.events.append(("thread.message.completed", copy.deepcopy(message)))
            run.steps.append(
                {
                    "id": _new_id("step"),
                    "object": "thread.run.step",
                    "created_at": stamp,
                    "assistant_id": data["assistant_id"],
                    "thread_id": run.thread_id,
                    "run_id": data["id"],
                    "type": "message_creation",
                    "status": "completed",
                    "step_details": {
                        "type": "message_creation",
                        "message_creation": {"message_id": message["id"]},
                    },
                    "last_error": None,
                    "expired_at": None,
                    "cancelled_at": None,
                    "failed_at": None,
                    "completed_at": stamp,
                    "metadata": {},
                    "usage": self._usage(run, reply),
                }
            )
        data["completed_at"] = stamp
        data["usage"] = self._usage(run, reply)
        self._set_status(run, "completed")

    # -- streaming ---------------------------------------------------------------------

    def _stream(
        self,
        run: _Run,
        record: RecordedRequest,
        *,
        first_event: int = 0,
        prefix: list[tuple[str, Any]] | None = None,
    ) -> StreamingResponse:
        def sent(name: str, data: Any) -> None:
            record.stream_events.append((name, data))
            if self._drop_stream_after(name):
                record.dropped = True
                raise StreamDropped(f"stream of {run.data['id']} dropped after {name}")

        async def events() -> AsyncIterator[str]:
            for name, data in prefix or []:
                yield _sse(name, data)
                sent(name, data)
            index = first_event
            while True:
                with self._lock:
                    self._advance(run)
                    pending = run.events[index:]
                    index = len(run.events)
                    status = run.data["status"]
                    target = self._next_transition(run)
                    now = self._now(run)
                for name, data in pending:
                    yield _sse(name, data)
                    sent(name, data)
                if status in TERMINAL_STATUSES or (
                    status == "requires_action" and run.cancel_at is None
                ):
                    break
                if target is None:  # "never": keep the stream open on the real clock
                    await asyncio.sleep(0.05)
                    continue
                wait = max(0.0, target - now)
                real = min(wait, max(self.run_seconds, 0.01)) if self.compress_streams else wait
                if real > 0:
                    await asyncio.sleep(real)
                with self._lock:
                    behind = target - self._now(run)
                    if behind > 0 and self.compress_streams:
                        run.skew += behind  # compress time: jump this run to its next transition
            record.stream_events.append(("done", "[DONE]"))
            yield _sse("done", "[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")
