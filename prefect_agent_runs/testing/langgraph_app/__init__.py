"""The LangGraph app served by :class:`~prefect_agent_runs.testing.LangGraphDevServer` (``graph.py``)."""
