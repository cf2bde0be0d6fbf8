"""One package per wire protocol. No Prefect imports here: a backend is a plain async client.

Adding a backend touches nothing outside its package (plus its emulator, tests, docs):

1. ``backends/<name>/client.py``: a :class:`~.base.BaseRunsClient` subclass with the
   class attributes ``backend`` (the name), ``capabilities`` (the optional operations it
   has, :class:`~.base.Capability`), ``status_map`` (server status word ->
   ``RunStatus``) and, if the shared parser cannot read its error bodies,
   ``error_parser``. It builds its :class:`~prefect_agent_runs.http.Transport` and uses
   the shared parts:

   * :meth:`~.base.BaseRunsClient.create_reconciled_run` with
     :data:`~.create.CREATE_ID_KEY` / :func:`~.create.new_create_id` and
     :func:`~.create.first_match` as the lookup (the duplicate-safe create);
   * :class:`~.paging.OffsetPager` or :class:`~.paging.CursorPager` under ``@paged``;
   * :func:`~.sse.read_events` (with a :class:`~.sse.ResumePoint`) for event streams;
   * :func:`~.steps.poll_step`, :func:`~.steps.join_step` or
     :func:`~.steps.event_stream_step` given to ``self._wait`` (the shared wait engine);
   * :meth:`~.base.BaseRunsClient.segment` for every id put in a path.
2. ``backends/<name>/__init__.py``: ``register(BackendSpec(name=..., client=...,
   credentials_block="XCredentials", block_type_name="X Credentials", settings=XSettings,
   ...))`` where ``XSettings`` is a plain pydantic model of the credentials' fields
   (``base_url`` and the secret as ``SecretStr``; its docstring becomes the block's).
   The block layer builds the Prefect block from it (``prefect_agent_runs.blocks.
   credentials_class(name)``, importable as ``prefect_agent_runs.blocks.XCredentials``);
   the CLI's ``--backend``, ``run_batch`` and ``AgentRunJob`` find it in the registry.

The registry finds every package here (:func:`.registry.discover`) and the entry point
group ``prefect_agent_runs.backends`` of other distributions. ``tests/skeleton`` has a
complete backend in a few dozen lines.
"""

from __future__ import annotations

from prefect_agent_runs.backends.base import BaseRunsClient, Capability, Page, RunEvent, RunsClient
from prefect_agent_runs.backends.langgraph import LangGraphClient
from prefect_agent_runs.backends.openai_assistants import AssistantsClient

__all__ = [
    "AssistantsClient",
    "BaseRunsClient",
    "Capability",
    "LangGraphClient",
    "Page",
    "RunEvent",
    "RunsClient",
]
