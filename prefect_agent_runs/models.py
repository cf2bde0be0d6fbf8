"""The normalized model shared by every backend: statuses, runs, requests and outcomes.

Every backend maps its server's JSON into these types and keeps the original next to
them (:attr:`Run.raw_status`, :attr:`Run.raw`), so nothing the server said is lost.
All models are pydantic models, so they serialize (Prefect results, shards of a batch).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefect_agent_runs._compact import own_fields_set
from prefect_agent_runs.errors import AgentRunsError, RunTimedOut

__all__ = [
    "METADATA_BATCH_KEY",
    "METADATA_FLOW_RUN_ID",
    "METADATA_ITEM_KEY",
    "STATUS_MAPS",
    "BatchResult",
    "Run",
    "RunOutcome",
    "RunRequest",
    "RunStatus",
    "ThreadResult",
]

METADATA_BATCH_KEY = "prefect_agent_runs_batch"
"""Metadata key that names the batch a run belongs to."""
METADATA_ITEM_KEY = "prefect_agent_runs_key"
"""Metadata key that names the item (``RunRequest.key``) a run was started for."""
METADATA_FLOW_RUN_ID = "prefect_flow_run_id"
"""Metadata key holding the Prefect flow run that started the run."""


class RunStatus(str, enum.Enum):
    """The normalized status of a remote run.

    Terminal: COMPLETED, FAILED, CANCELLED, EXPIRED, INCOMPLETE, INTERRUPTED, TIMED_OUT.
    Unknown server statuses map to UNKNOWN, which is not terminal: the wait deadline
    decides, never a crash.
    """

    QUEUED = "queued"
    RUNNING = "running"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    INCOMPLETE = "incomplete"
    INTERRUPTED = "interrupted"
    TIMED_OUT = "timed_out"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """True when the run will not change any more."""
        return self in _TERMINAL

    @property
    def is_success(self) -> bool:
        """True only for COMPLETED."""
        return self is RunStatus.COMPLETED


_TERMINAL = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.EXPIRED,
        RunStatus.INCOMPLETE,
        RunStatus.INTERRUPTED,
        RunStatus.TIMED_OUT,
    }
)

STATUS_MAPS: dict[str, dict[str, RunStatus]] = {}
"""Server status string to :class:`RunStatus`, per backend (DESIGN.md's table).

Filled by the backend registry (:func:`prefect_agent_runs.backends.registry.register`):
each backend's client declares its ``status_map``.
"""


def normalize_status(backend: str, raw_status: str | None) -> RunStatus:
    """Map a server's status string to a :class:`RunStatus` (UNKNOWN when unknown).

    Args:
        backend: The backend name, a key of :data:`STATUS_MAPS` (a registered backend).
        raw_status: The status string the server sent.

    Returns:
        The normalized status.
    """
    if raw_status is None:
        return RunStatus.UNKNOWN
    return STATUS_MAPS.get(backend, {}).get(raw_status.lower(), RunStatus.UNKNOWN)


class Run(BaseModel):
    """One remote run, normalized, with the server's own JSON kept in :attr:`raw`.

    Attributes:
        id: The run id.
        thread_id: The thread the run belongs to (None for a run without a thread).
        status: The normalized status.
        raw_status: The status string the server sent.
        backend: The backend that produced this run.
        assistant_id: The assistant / graph the run executes.
        created_at: When the server created it.
        started_at: When it started executing, if the server says.
        completed_at: When it reached a terminal state, if the server says.
        metadata: The run's metadata.
        error: The server's error text for a failed run.
        raw: The server's JSON for the run, unchanged.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    thread_id: str | None = None
    status: RunStatus
    raw_status: str | None = None
    backend: str
    assistant_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def key(self) -> str | None:
        """The batch item key stored in the run's metadata, if any."""
        value = self.metadata.get(METADATA_ITEM_KEY)
        return str(value) if value is not None else None

    def describe(self) -> str:
        """A short human description: ``run R on thread T (status)``."""
        where = f" on thread {self.thread_id}" if self.thread_id else ""
        return f"run {self.id}{where} ({self.raw_status or self.status.value})"


class RunRequest(BaseModel):
    """What to start: one item of a batch, or one call of ``create_run``.

    Attributes:
        assistant_id: The assistant (OpenAI-compatible) or graph / assistant (LangGraph).
        thread_id: Run on this existing thread; None starts a new thread.
        input: The run's input (LangGraph ``input``); mutually usable with ``message``.
        message: A user message to add before the run starts.
        instructions: Instructions that replace the assistant's for this run.
        metadata: Metadata stored on the run (and thread where the platform has it).
        key: The caller's key for this item, unique within a batch.
        options: Backend-specific fields passed through to the create request as they are.
    """

    model_config = ConfigDict(frozen=True)

    assistant_id: str
    thread_id: str | None = None
    input: dict[str, Any] | None = None
    message: str | None = None
    instructions: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    key: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("assistant_id")
    @classmethod
    def _assistant_not_empty(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError("assistant_id must not be empty")
        return value

    def with_metadata(self, extra: Mapping[str, Any]) -> RunRequest:
        """Return a copy whose metadata also holds ``extra`` (``extra`` wins)."""
        return self.model_copy(update={"metadata": {**self.metadata, **extra}})


class _Changeable(BaseModel):
    """A model that may change after a batch shared its set of field names (``_compact.py``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        own_fields_set(self)
        super().__setattr__(name, value)


class ThreadResult(_Changeable):
    """What one run wrote to its thread.

    Attributes:
        thread_id: The thread.
        run_id: The run whose output this is.
        messages: The run's messages as the server returned them (JSON objects).
        values: The thread's state values (LangGraph), or None.
        text: The text of the last assistant message, or None.
        source: Where the result was read: ``"join"`` (the join's answer, no extra request),
            ``"state"`` (``GET /threads/{id}/state``, when the join could not answer),
            ``"messages"`` (a thread's message list); None when not said.
    """

    thread_id: str | None = None
    run_id: str
    messages: list[dict[str, Any]] = Field(default_factory=list)
    values: dict[str, Any] | None = None
    text: str | None = None
    source: str | None = None


class RunOutcome(_Changeable):
    """The end of one batch item: its last run state, its result, or why it failed.

    Attributes:
        key: The item key.
        run: The last state of the run (None if it was never created).
        result: What the run wrote to its thread (when collected and successful).
        error: Why the item did not succeed, as a message; None on success.
        error_type: The exception class name behind ``error``.
        attempts: How many create requests were sent for this item in this flow run.
        seconds_queued: Seconds from creation to start, where the server says.
        seconds_running: Seconds from the moment the run existed (created or re-attached)
            until we saw its terminal state, measured with a monotonic clock.
        resumed: True when the run was found from an earlier attempt of the same batch.
    """

    key: str
    run: Run | None = None
    result: ThreadResult | None = None
    error: str | None = None
    error_type: str | None = None
    attempts: int = 0
    seconds_queued: float | None = None
    seconds_running: float | None = None
    resumed: bool = False

    @property
    def status(self) -> RunStatus:
        """How the item ended: its run's status; TIMED_OUT when our ``timeout_seconds``
        passed first (``run`` keeps the state last seen); UNKNOWN when no run exists."""
        if self.run is None:
            return RunStatus.UNKNOWN
        if self.error_type == RunTimedOut.__name__:
            return RunStatus.TIMED_OUT
        return self.run.status

    @property
    def ok(self) -> bool:
        """True when the run completed and no error was recorded."""
        return self.error is None and self.status.is_success

    def to_record(self) -> dict[str, Any]:
        """A flat JSON-able dict: one line of a report or of ``--out``."""
        return {
            "key": self.key,
            "thread_id": self.run.thread_id if self.run else None,
            "run_id": self.run.id if self.run else None,
            "status": self.status.value,
            "raw_status": self.run.raw_status if self.run else None,
            "ok": self.ok,
            "text": self.result.text if self.result else None,
            "error": self.error,
            "error_type": self.error_type,
            "attempts": self.attempts,
            "resumed": self.resumed,
            "seconds_queued": self.seconds_queued,
            "seconds_running": self.seconds_running,
        }


FailOn = Literal["never", "any"] | float


class BatchResult(BaseModel):
    """The outcome of a batch: one :class:`RunOutcome` per item, in request order.

    Attributes:
        batch_key: The batch's key (pass it again to resume the batch).
        outcomes: One outcome per item.
    """

    batch_key: str
    outcomes: list[RunOutcome] = Field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Number of items per final status value (``"completed"``, ``"failed"``...)."""
        return dict(Counter(o.status.value for o in self.outcomes))

    @property
    def completed(self) -> list[RunOutcome]:
        """The items that completed successfully."""
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[RunOutcome]:
        """The items that did not complete successfully, for whatever reason."""
        return [o for o in self.outcomes if not o.ok]

    @property
    def failure_ratio(self) -> float:
        """Failed items over all items (0.0 for an empty batch)."""
        return len(self.failed) / len(self.outcomes) if self.outcomes else 0.0

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per item (see :meth:`RunOutcome.to_record`)."""
        return [o.to_record() for o in self.outcomes]

    def should_fail(self, fail_on: FailOn) -> bool:
        """Whether the batch counts as failed under ``fail_on``.

        Args:
            fail_on: ``"never"``, ``"any"``, or a ratio in [0, 1]: fail when the share of
                failed items is above it.
        """
        if fail_on == "never":
            return False
        if fail_on == "any":
            return bool(self.failed)
        if isinstance(fail_on, (int, float)) and 0.0 <= float(fail_on) <= 1.0:
            return self.failure_ratio > float(fail_on)
        raise ValueError(f"fail_on must be 'never', 'any' or a ratio in [0, 1], not {fail_on!r}")

    def raise_on_failure(self, fail_on: FailOn = "any") -> BatchResult:
        """Raise :class:`BatchFailed` when :meth:`should_fail` says so, else return self."""
        if self.should_fail(fail_on):
            raise BatchFailed(self)
        return self

    @classmethod
    def merge(cls, batch_key: str, parts: Iterable[BatchResult]) -> BatchResult:
        """Merge the results of several shards of one batch, keeping their order."""
        return cls(batch_key=batch_key, outcomes=[o for p in parts for o in p.outcomes])


class BatchFailed(AgentRunsError):
    """A batch had more failed items than its ``fail_on`` allows.

    Attributes:
        result: The whole batch result.
    """

    def __init__(self, result: BatchResult) -> None:
        failed = result.failed
        sample = "; ".join(f"{o.key}: {o.error or o.status.value}" for o in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(
            f"batch {result.batch_key!r}: {len(failed)} of {len(result.outcomes)} items "
            f"did not complete: {sample}{more}"
        )
        self.result = result
