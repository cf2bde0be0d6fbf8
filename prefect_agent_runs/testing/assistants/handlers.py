"""The Assistants emulator's handlers, one per operation of the API."""

from __future__ import annotations

import copy

from starlette.responses import Response

from prefect_agent_runs.testing.assistants.lifecycle import EmulatorLifecycle
from prefect_agent_runs.testing.assistants.records import (
    _ASSISTANT_KEYS,
    _DUMMY,
    _MESSAGE_KEYS,
    _RUN_KEYS,
    _THREAD_AND_RUN_KEYS,
    _THREAD_KEYS,
    _Call,
    _new_id,
    _paginate,
)
from prefect_agent_runs.testing.assistants.validate import (
    ApiError,
    check_metadata,
    check_tool_resources,
)

__all__ = ["EmulatorHandlers"]


class EmulatorHandlers(EmulatorLifecycle):
    """One coroutine per API operation; :class:`AssistantsEmulator` routes to them."""

    # -- handlers: assistants ----------------------------------------------------------

    async def _create_assistant(self, call: _Call) -> Response:
        with self._lock:
            body = self._object_body(call, _ASSISTANT_KEYS, required=True)
            model = self._require(body, "model")
            assistant = {
                "id": _new_id("asst"),
                "object": "assistant",
                "created_at": int(self.wall_clock()),
                "name": body.get("name"),
                "description": body.get("description"),
                "model": model,
                "instructions": body.get("instructions"),
                "tools": body.get("tools") or [],
                "tool_resources": check_tool_resources(
                    body.get("tool_resources"), vector_store_helpers=True
                ),
                "metadata": check_metadata(body.get("metadata")),
                "temperature": body.get("temperature", 1.0),
                "top_p": body.get("top_p", 1.0),
                "response_format": body.get("response_format") or "auto",
            }
            self._assistants[assistant["id"]] = assistant
            return self._json(copy.deepcopy(assistant), 200, call.record)

    async def _get_assistant(self, call: _Call) -> Response:
        with self._lock:
            assistant = self._assistants.get(call.params["assistant_id"])
            if assistant is None:
                raise ApiError(404, f"No assistant found with id '{call.params['assistant_id']}'.")
            return self._json(copy.deepcopy(assistant), 200, call.record)

    async def _list_assistants(self, call: _Call) -> Response:
        with self._lock:
            page = _paginate(list(self._assistants.values()), call.query)
            return self._json(page, 200, call.record)

    # -- handlers: threads and messages ------------------------------------------------

    async def _create_thread(self, call: _Call) -> Response:
        with self._lock:
            body = self._object_body(call, _THREAD_KEYS)
            thread = self._new_thread(body)
            return self._json(copy.deepcopy(thread.data), 200, call.record)

    async def _get_thread(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            return self._json(copy.deepcopy(thread.data), 200, call.record)

    async def _modify_thread(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            body = self._object_body(call, frozenset({"metadata", "tool_resources"}))
            if "metadata" in body:
                thread.data["metadata"] = check_metadata(body["metadata"])
            if body.get("tool_resources") is not None:
                thread.data["tool_resources"] = check_tool_resources(body["tool_resources"])
            return self._json(copy.deepcopy(thread.data), 200, call.record)

    async def _delete_thread(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            del self._threads[thread.data["id"]]
            for run in thread.runs:
                self._runs.pop(run.data["id"], None)
            body = {"id": thread.data["id"], "object": "thread.deleted", "deleted": True}
            return self._json(body, 200, call.record)

    async def _create_message(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            body = self._object_body(call, _MESSAGE_KEYS, required=True)
            active = self._active_run(thread)
            if active is not None:
                raise ApiError(
                    400,
                    f"Can't add messages to {thread.data['id']} while a run "
                    f"{active.data['id']} is active.",
                )
            message = self._new_message(thread, body)
            return self._json(copy.deepcopy(message), 200, call.record)

    async def _get_message(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            for run in thread.runs:
                self._advance(run)
            for message in thread.messages:
                if message["id"] == call.params["message_id"]:
                    return self._json(copy.deepcopy(message), 200, call.record)
            raise ApiError(404, f"No message found with id '{call.params['message_id']}'.")

    async def _list_messages(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            for run in thread.runs:
                self._advance(run)
            run_id = call.query.get("run_id")
            page = _paginate(
                thread.messages,
                call.query,
                keep=None if run_id is None else (lambda m: m["run_id"] == run_id),
            )
            return self._json(copy.deepcopy(page), 200, call.record)

    # -- handlers: runs ----------------------------------------------------------------

    async def _create_thread_and_run(self, call: _Call) -> Response:
        with self._lock:
            body = self._object_body(call, _THREAD_AND_RUN_KEYS, required=True)
            self._require(body, "assistant_id")
            self._assistant_defaults(body["assistant_id"])
            check_metadata(body.get("metadata"))
            self._script(check_metadata(body.get("metadata")))
            thread_body = body.get("thread") or {}
            if not isinstance(thread_body, dict):
                raise ApiError(400, "Invalid 'thread': expected an object.", param="thread")
            self._object_body(_Call("", "", {}, {}, thread_body, _DUMMY), _THREAD_KEYS)
            tool_resources = check_tool_resources(body.get("tool_resources"))
            thread = self._new_thread(thread_body, param="thread.tool_resources")
            if body.get("tool_resources") is not None:
                thread.data["tool_resources"] = tool_resources
            run = self._start_run(thread, body, allow_additional=False)
            if body.get("stream"):
                prefix = [("thread.created", copy.deepcopy(thread.data))]
                return self._stream(run, call.record, prefix=prefix)
            return self._run_response(run, call.record)

    async def _create_run(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            body = self._object_body(call, _RUN_KEYS, required=True)
            run = self._start_run(thread, body, allow_additional=True)
            if body.get("stream"):
                return self._stream(run, call.record)
            return self._run_response(run, call.record)

    async def _list_runs(self, call: _Call) -> Response:
        with self._lock:
            thread = self._thread_rec(call.params["thread_id"])
            for run in thread.runs:
                self._advance(run)
            page = _paginate([r.data for r in thread.runs], call.query)
            return self._json(copy.deepcopy(page), 200, call.record)

    async def _get_run(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            return self._run_response(run, call.record)

    async def _modify_run(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            body = self._object_body(call, frozenset({"metadata"}))
            if "metadata" in body:
                run.data["metadata"] = check_metadata(body["metadata"])
            return self._run_response(run, call.record)

    async def _cancel_run(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            status = run.data["status"]
            if status not in ("queued", "in_progress", "requires_action"):
                raise ApiError(400, f"Cannot cancel run with status '{status}'.")
            run.cancel_at = self._now(run)
            self._set_status(run, "cancelling")
            self._advance(run)
            return self._run_response(run, call.record)

    async def _submit_tool_outputs(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            body = self._object_body(call, frozenset({"tool_outputs", "stream"}), required=True)
            outputs = self._require(body, "tool_outputs")
            status = run.data["status"]
            if status != "requires_action" or run.data["required_action"] is None:
                raise ApiError(400, f'Runs in status "{status}" do not accept tool outputs.')
            if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
                raise ApiError(400, "Invalid 'tool_outputs'.", param="tool_outputs")
            calls = run.data["required_action"]["submit_tool_outputs"]["tool_calls"]
            expected = sorted(c["id"] for c in calls)
            given = sorted(str(o.get("tool_call_id")) for o in outputs)
            if expected != given:
                raise ApiError(
                    400,
                    f"Expected tool outputs for call_ids {expected}, got {given}",
                    param="tool_outputs",
                )
            run.tool_outputs = [str(o.get("output", "")) for o in outputs]
            run.after_tools_at = self._now(run)
            run.data["required_action"] = None
            first_event = len(run.events)
            self._set_status(run, "queued")
            self._set_status(run, "in_progress")
            self._advance(run)
            if body.get("stream"):
                return self._stream(run, call.record, first_event=first_event)
            return self._run_response(run, call.record)

    async def _list_steps(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            page = _paginate(run.steps, call.query)
            return self._json(copy.deepcopy(page), 200, call.record)

    async def _get_step(self, call: _Call) -> Response:
        with self._lock:
            run = self._run_rec(call.params["thread_id"], call.params["run_id"])
            for step in run.steps:
                if step["id"] == call.params["step_id"]:
                    return self._json(copy.deepcopy(step), 200, call.record)
            raise ApiError(404, f"No run step found with id '{call.params['step_id']}'.")
