"""Prefect events for remote runs, for Automations.

The batch flows emit a Prefect event named
``prefect-agent-runs.run.<status>`` (``prefect-agent-runs.run.failed``,
``prefect-agent-runs.run.completed``...) for a remote run. How many, a batch flow's
``events`` parameter says (:data:`EventLevel`):

* ``"failures"`` (the default): one per item that did not complete, when the batch is
  done with it (``failed``, ``cancelled``, ``timed_out``...): a healthy batch emits none;
* ``"ends"``: one per item when the batch is done with it, ``completed`` included
  (``queued`` for ``create_runs``, whose items are done once created);
* ``"changes"``: also every status the batch saw before that (``queued``, ``running``...);
* ``"none"``: no event.

Prefect's server stores and evaluates every event: a few ms of its CPU each, so two or three
events per run of a 10,000-item batch keep a server busy for minutes (docs/benchmarks.md).

Each event has

* the **run** as the event's resource: ``prefect-agent-runs.run.<backend>.<run id>``, with
  its thread, backend and item key as labels;
* the **batch** as a related resource (role ``batch``):
  ``prefect-agent-runs.batch.<batch key>``;
* Prefect's own related resources of the run context (the flow run, the flow, the
  deployment...), added by Prefect;
* a payload with the item key, the server's own status word and, for a run that did not
  complete, the short error.

So an Automation can react while the batch still runs, for instance on the first failed
item of a nightly batch:

```yaml
trigger:
  type: event
  posture: Reactive
  expect: ["prefect-agent-runs.run.failed"]
  match_related:
    prefect.resource.role: batch
  threshold: 1
  within: 0
```

Events are best effort, like Prefect's own: emitting never raises into the batch. The
backends never import Prefect; this module is the flows layer's.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, get_args

from prefect_agent_runs.errors import ValidationError
from prefect_agent_runs.models import Run, RunOutcome, RunStatus

__all__ = [
    "EVENT_LEVELS",
    "EVENT_PREFIX",
    "EventLevel",
    "RunEventEmitter",
    "batch_resource_id",
    "emit_run_event",
    "run_resource_id",
]

logger = logging.getLogger("prefect_agent_runs.flows.events")

EVENT_PREFIX = "prefect-agent-runs.run."
"""Every event this package emits is ``EVENT_PREFIX + <normalized status>``."""

_MAX_ERROR_CHARS = 500

EventLevel = Literal["failures", "ends", "changes", "none"]
"""Which events a batch emits: items that did not complete, every item's end, every
change, or none."""

EVENT_LEVELS: tuple[str, ...] = get_args(EventLevel)
"""The valid ``events`` levels, the default first."""


def run_resource_id(backend: str, run_id: str) -> str:
    """The event resource id of a remote run: ``prefect-agent-runs.run.<backend>.<run id>``."""
    return f"prefect-agent-runs.run.{backend}.{run_id}"


def batch_resource_id(batch_key: str) -> str:
    """The event resource id of a batch: ``prefect-agent-runs.batch.<batch key>``."""
    return f"prefect-agent-runs.batch.{batch_key}"


def emit_run_event(
    run: Run,
    *,
    backend: str,
    status: RunStatus | None = None,
    batch_key: str | None = None,
    key: str | None = None,
    error: str | None = None,
) -> bool:
    """Emit ``prefect-agent-runs.run.<status>`` for one remote run.

    Args:
        run: The run as last seen.
        backend: The backend's name (``langgraph``...).
        status: The status to report (default: the run's); a batch reports its outcome's
            status, e.g. ``timed_out`` when our deadline passed.
        batch_key: The batch the run belongs to, if any (a related resource).
        key: The item key within the batch.
        error: A short error for a run that did not complete.

    Returns:
        Whether an event was handed to Prefect (False outside Prefect's reach, or on an
        error, which is logged at DEBUG).
    """
    status = status or run.status
    resource: dict[str, str] = {
        "prefect.resource.id": run_resource_id(backend, run.id),
        "prefect.resource.name": run.id,
        "prefect-agent-runs.backend": backend,
        "prefect-agent-runs.status": status.value,
    }
    if run.thread_id:
        resource["prefect-agent-runs.thread-id"] = run.thread_id
    if key is not None:
        resource["prefect-agent-runs.key"] = key
    related: list[dict[str, str]] = []
    if batch_key:
        related.append(
            {
                "prefect.resource.id": batch_resource_id(batch_key),
                "prefect.resource.role": "batch",
                "prefect.resource.name": batch_key,
            }
        )
    payload: dict[str, Any] = {
        "key": key,
        "run_id": run.id,
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id,
        "status": status.value,
        "raw_status": run.raw_status,
    }
    if error:
        payload["error"] = error[:_MAX_ERROR_CHARS]
    try:
        from prefect.events import emit_event

        event = emit_event(
            event=f"{EVENT_PREFIX}{status.value}",
            resource=resource,
            related=related,
            payload=payload,
        )
    except Exception as exc:  # events are best effort: never fail a batch for one
        logger.debug("could not emit an event for %s: %s", run.id, exc)
        return False
    return event is not None


class RunEventEmitter:
    """Emits at most one event per (item, status): the batch calls it on every observation.

    Args:
        backend: The backend's name.
        batch_key: The batch (a related resource of every event).
        level: Which events (:data:`EventLevel`).

    Raises:
        ValidationError: An unknown level.
    """

    def __init__(self, backend: str, batch_key: str | None, level: EventLevel = "failures") -> None:
        if level not in EVENT_LEVELS:
            raise ValidationError(
                f"events must be one of {', '.join(map(repr, EVENT_LEVELS))}, not {level!r}"
            )
        self.backend = backend
        self.batch_key = batch_key
        self.level = level
        self.emitted = 0
        self._last: dict[str, RunStatus] = {}

    def run_seen(self, key: str, run: Run, *, status: RunStatus | None = None) -> None:
        """Emit if this item's run is in a status not reported yet.

        A terminal status is left to :meth:`outcome`, which knows the error.

        Args:
            key: The item key.
            run: The run as just seen.
            status: Override the status to report (default: the run's).
        """
        status = status or run.status
        if self.level != "changes" or status.is_terminal or self._last.get(key) is status:
            return
        self._last[key] = status
        if emit_run_event(
            run, backend=self.backend, status=status, batch_key=self.batch_key, key=key
        ):
            self.emitted += 1

    def outcome(self, outcome: RunOutcome) -> None:
        """Emit the item's final status (e.g. ``timed_out``) unless it was reported."""
        if outcome.run is None or self.level == "none":
            return
        if self.level == "failures" and not outcome.error:
            return
        if self._last.get(outcome.key) is outcome.status:
            return
        self._last[outcome.key] = outcome.status
        if emit_run_event(
            outcome.run,
            backend=self.backend,
            status=outcome.status,
            batch_key=self.batch_key,
            key=outcome.key,
            error=outcome.error,
        ):
            self.emitted += 1
