"""``on_cancellation`` / ``on_crashed`` hooks: find a batch's runs again and cancel them.

Under a runner or worker these hooks run in the runner process, after the flow process
ended, so nothing of the flow's memory is available. They find:

* the batch key: the flow run's ``batch_key`` parameter, else the pointer the flow wrote
  to the result storage under its flow run id (for a generated key);
* the credentials: the ledger's reference (a saved block, loaded again, or the
  environment variables that hold the secrets) or, if the ledger has none, the flow run's
  ``credentials`` parameter when it is complete (never: Prefect masks secrets);
* the runs: on LangGraph, every thread tagged with the batch key (``find_batch_runs``),
  elsewhere the runs recorded in the ledger; every one that is not terminal is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from prefect_agent_runs.backends.base import Capability
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.errors import AgentRunsError
from prefect_agent_runs.flows._ledger import BatchLedger, load_credentials
from prefect_agent_runs.models import Run, RunStatus

__all__ = ["cancel_batch_runs", "cancel_remote_runs_hook"]

logger = logging.getLogger("prefect_agent_runs.flows.hooks")

MAX_PARALLEL_CANCELS = 32


def _credentials_from_parameter(value: Any) -> AgentRunsCredentials | None:
    if isinstance(value, AgentRunsCredentials):
        return value
    if isinstance(value, Mapping) and "block_type_slug" in value:
        data = dict(value)
        if any(v == "**********" for v in data.values()):
            return None  # obfuscated secrets: not usable
        try:
            return AgentRunsCredentials.model_validate(data)
        except Exception:
            return None
    return None


async def cancel_batch_runs(
    batch_key: str,
    credentials: AgentRunsCredentials,
    *,
    ledger: BatchLedger | None = None,
    reason: str = "the batch was cancelled",
) -> list[Run]:
    """Cancel every non-terminal run of a batch; returns the runs a cancel was sent to.

    Args:
        batch_key: The batch.
        credentials: Opens the backend.
        ledger: The batch's ledger (read from the result storage when not given).
        reason: For the log.
    """
    ledger = ledger or await BatchLedger(batch_key).load()
    cancelled: list[Run] = []
    client: Any = credentials.get_client()
    async with client:
        candidates: dict[str, Run] = {}
        if client.has(Capability.FIND_BATCH_RUNS):
            try:
                for run in await client.find_batch_runs(batch_key):
                    candidates[run.id] = run
            except AgentRunsError as exc:
                logger.error("could not search the runs of batch %r: %s", batch_key, exc)
        for key, run in ledger.known_runs(client.backend).items():
            entry_status = ledger.runs.get(key, {}).get("status")
            if run.id not in candidates and entry_status not in _TERMINAL_VALUES:
                candidates[run.id] = run
        slots = asyncio.Semaphore(MAX_PARALLEL_CANCELS)

        async def one(run: Run) -> None:
            async with slots:
                try:
                    if run.status is RunStatus.UNKNOWN:
                        run = await client.get_run(run.id, thread_id=run.thread_id)
                    if run.status.is_terminal:
                        return
                    await client.cancel_run(run.id, thread_id=run.thread_id)
                    cancelled.append(run)
                except AgentRunsError as exc:
                    logger.error("could not cancel %s (%s): %s", run.describe(), reason, exc)

        await asyncio.gather(*(one(r) for r in candidates.values()))
    if cancelled:
        logger.warning(
            "batch %r: cancelled %d remote run(s) (%s)", batch_key, len(cancelled), reason
        )
    return cancelled


_TERMINAL_VALUES = frozenset(s.value for s in RunStatus if s.is_terminal)


async def cancel_remote_runs_hook(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (``on_cancellation``, ``on_crashed``): cancel the batch's remote runs."""
    parameters: Mapping[str, Any] = getattr(flow_run, "parameters", None) or {}
    flow_run_id = str(getattr(flow_run, "id", "") or "")
    ledger: BatchLedger | None = None
    batch_key = parameters.get("batch_key")
    if batch_key:
        ledger = await BatchLedger(str(batch_key)).load()
    elif flow_run_id:
        ledger = await BatchLedger.for_flow_run(flow_run_id)
    if ledger is None:
        logger.error(
            "flow run %s: no batch key recorded; cannot find its remote runs to cancel",
            flow_run_id,
        )
        return
    credentials: AgentRunsCredentials | None = None
    reference = ledger.credentials_reference()
    if reference:
        credentials = await load_credentials(reference)
    if credentials is None:
        credentials = _credentials_from_parameter(parameters.get("credentials"))
    if credentials is None:
        logger.error(
            "batch %r: cannot open the backend again: the credentials were an unsaved block "
            "with an inline secret, which the ledger never records, so only the flow's "
            "in-process cancellation ran (save the block, or take the key from an "
            "environment variable, to let this hook cancel the remaining runs)",
            ledger.batch_key,
        )
        return
    state_name = getattr(state, "name", "ended")
    await cancel_batch_runs(
        ledger.batch_key,
        credentials,
        ledger=ledger,
        reason=f"flow run {flow_run_id} {str(state_name).lower()}",
    )
