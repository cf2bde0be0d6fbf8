"""LangGraph Platform / Agent Server runs (seeds 001 and 004); see :mod:`.client`.

Registers the ``langgraph`` backend (credentials block ``LangGraphCredentials``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from prefect_agent_runs.backends.langgraph.client import STATUS_MAP, LangGraphClient
from prefect_agent_runs.backends.registry import BackendSpec, Demo, register

__all__ = ["SPEC", "STATUS_MAP", "LangGraphClient"]


def _demo(items: int) -> AbstractContextManager[Demo]:
    from prefect_agent_runs.testing.langgraph_dev import demo

    return demo(items)


SPEC = register(
    BackendSpec(
        name="langgraph",
        client=LangGraphClient,
        credentials_block="LangGraphCredentials",
        block_type_name="LangGraph Credentials",
        description="LangGraph Platform deployments and LangGraph Agent Servers.",
        secret_field="api_key",
        demo=_demo,
    )
)
"""The ``langgraph`` backend, as registered."""
