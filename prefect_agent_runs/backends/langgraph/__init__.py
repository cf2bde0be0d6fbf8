"""LangGraph Platform / Agent Server runs (seeds 001 and 004); see :mod:`.client`."""

from __future__ import annotations

from prefect_agent_runs.backends.langgraph.client import LangGraphClient

__all__ = ["LangGraphClient"]
