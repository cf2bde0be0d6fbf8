"""A tiny deterministic LangGraph graph for tests, demos and benchmarks (no LLM).

Input keys (all optional except ``messages``):

* ``messages``: chat messages; the last one's content is echoed back.
* ``sleep_seconds``: total time to sleep (asynchronously), split evenly across ``steps``.
* ``steps``: how many sleep steps to run (default 1), so a slow run emits several
  stream events.
* ``fail``: when true, the run raises :class:`EchoGraphError` after sleeping.
* ``fail_message``: the message of that error (implies ``fail``).

The control keys are ephemeral: they apply to the run whose input carries them and do not
stick to the thread, so a run after a failed one on the same thread succeeds.

On success the graph appends an AI message ``"echo: <last message content>"`` and sets
the ``reply`` key to the same text. Served under the graph id ``echo``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.channels.ephemeral_value import EphemeralValue
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import NotRequired, TypedDict

DEFAULT_FAIL_MESSAGE = "echo graph failed as requested"


class EchoGraphError(RuntimeError):
    """Raised by the ``echo`` graph when the input asks it to fail."""


class EchoState(TypedDict):
    """State of the ``echo`` graph."""

    messages: Annotated[list[AnyMessage], add_messages]
    # per-run controls: ephemeral, seen only by the first node of the run
    sleep_seconds: NotRequired[Annotated[float, EphemeralValue(float)]]
    steps: NotRequired[Annotated[int, EphemeralValue(int)]]
    fail: NotRequired[Annotated[bool, EphemeralValue(bool)]]
    fail_message: NotRequired[Annotated[str, EphemeralValue(str)]]
    # bookkeeping, rewritten at the start of every run
    step: NotRequired[int]
    total_steps: NotRequired[int]
    step_seconds: NotRequired[float]
    fail_reason: NotRequired[str]
    reply: NotRequired[str]


def begin(state: EchoState) -> dict[str, Any]:
    """Copy this run's controls into regular state keys."""
    steps = max(1, int(state.get("steps") or 1))
    seconds = max(0.0, float(state.get("sleep_seconds") or 0.0))
    fail_message = state.get("fail_message") or ""
    if state.get("fail") and not fail_message:
        fail_message = DEFAULT_FAIL_MESSAGE
    return {
        "step": 0,
        "total_steps": steps,
        "step_seconds": seconds / steps,
        "fail_reason": fail_message,
    }


async def work(state: EchoState) -> dict[str, Any]:
    """Sleep one step's share of ``sleep_seconds`` and count the step."""
    seconds = float(state.get("step_seconds") or 0.0)
    if seconds > 0:
        await asyncio.sleep(seconds)
    return {"step": int(state.get("step") or 0) + 1}


def route(state: EchoState) -> str:
    """Loop on ``work`` until all steps are done, then go to ``respond``."""
    done = int(state.get("step") or 0) >= int(state.get("total_steps") or 1)
    return "respond" if done else "work"


async def respond(state: EchoState) -> dict[str, Any]:
    """Fail if asked to, else echo the last message."""
    if state.get("fail_reason"):
        raise EchoGraphError(state.get("fail_reason"))
    messages = state.get("messages") or []
    content: Any = messages[-1].content if messages else ""
    text = "echo: " + (content if isinstance(content, str) else str(content))
    return {"messages": [AIMessage(content=text)], "reply": text}


_builder = StateGraph(EchoState)
_builder.add_node("begin", begin)
_builder.add_node("work", work)
_builder.add_node("respond", respond)
_builder.add_edge(START, "begin")
_builder.add_edge("begin", "work")
_builder.add_conditional_edges("work", route, ["work", "respond"])
_builder.add_edge("respond", END)

graph = _builder.compile()
"""The compiled ``echo`` graph."""
