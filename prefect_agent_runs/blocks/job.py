"""``AgentRunJob``: a saved remote run to trigger, as a Prefect ``JobBlock``.

``AgentRunJob.trigger()`` starts the run and returns an :class:`AgentRun` (a Prefect
``JobRun``), which waits for completion, fetches what the run wrote to its thread, and
also reads the status and cancels the run (two operations Prefect's ``JobRun`` lacks).

Every method has an async twin (``atrigger``, ``await_for_completion``,
``afetch_result``, ``acancel``, ``aget_status``); the plain names dispatch on the caller
like Prefect's own ``Block.load``: awaitable in async code, a value in sync code.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeAlias, TypeVar, cast

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.blocks.abstract import JobBlock, JobRun
from prefect.blocks.core import _collect_secret_fields
from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import Field, HttpUrl, SerializeAsAny, field_validator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode

from prefect_agent_runs.backends.base import RunsClient
from prefect_agent_runs.blocks.credentials import (
    _DOCS,
    AgentRunsCredentials,
    credentials_classes,
    logo_url,
    registering_nested_credentials,
)
from prefect_agent_runs.models import Run, RunRequest, RunStatus, ThreadResult
from prefect_agent_runs.waiting import PollPolicy, raise_for_outcome

__all__ = ["AgentRun", "AgentRunJob"]

R = TypeVar("R")

AnyCredentials: TypeAlias = SerializeAsAny[AgentRunsCredentials]
"""The credentials blocks an ``AgentRunJob`` accepts: any backend's (found by block type
when loaded, so a backend registered later needs no change here). ``SerializeAsAny``: a
job is saved with its block's own fields (the key included, as a secret), not only the
shared ones (issue 13: an AgentRunJob holding AssistantsCredentials loaded back as
another class, without its key)."""


def _credentials_class_for_slug(slug: str) -> type[AgentRunsCredentials] | None:
    """The credentials block class whose Prefect block type slug is ``slug``."""
    pending: list[type[AgentRunsCredentials]] = [AgentRunsCredentials]
    while pending:
        block_class = pending.pop()
        if block_class is not AgentRunsCredentials and block_class.get_block_type_slug() == slug:
            return block_class
        pending.extend(block_class.__subclasses__())
    return None


def _offer_concrete_credentials(schema: dict[str, Any]) -> dict[str, Any]:
    """The job's block schema with ``credentials`` as a choice of every concrete credentials
    block (as Prefect writes a union of blocks), not the shared base: the Blocks catalog
    then offers only blocks that work, and the job still takes any backend's block."""
    blocks = credentials_classes()
    definitions: dict[str, Any] = schema.setdefault("definitions", {})
    definitions.pop(AgentRunsCredentials.__name__, None)
    for block in blocks:
        block_schema = block.model_json_schema()
        definitions.update(block_schema.pop("definitions", {}))
        definitions[block.__name__] = block_schema
    field = schema["properties"]["credentials"]
    field.pop("$ref", None)
    field["anyOf"] = [{"$ref": f"#/definitions/{block.__name__}"} for block in blocks]
    field.setdefault("title", "Credentials")
    schema["block_schema_references"]["credentials"] = [
        block._to_block_schema_reference_dict()  # type: ignore[no-untyped-call]
        for block in blocks
    ]
    secrets = [s for s in schema.get("secret_fields", []) if not s.startswith("credentials.")]
    for block in blocks:
        found: list[str] = []
        _collect_secret_fields("credentials", block, found)
        secrets.extend(s for s in found if s not in secrets)
    schema["secret_fields"] = secrets
    return schema


_SCHEMAS: dict[tuple[Any, ...], dict[str, Any]] = {}
"""``AgentRunJob``'s block schemas, by class, arguments and offered credentials blocks."""


@asynccontextmanager
async def _client(credentials: AgentRunsCredentials) -> AsyncIterator[RunsClient]:
    """``async with credentials.get_client()``, typed as the ``RunsClient`` protocol."""
    async with credentials.get_client() as client:
        yield cast(RunsClient, client)


def _sync(coro: Coroutine[Any, Any, R]) -> R:
    result: R = run_coro_as_sync(coro)
    return result


class AgentRun(JobRun[ThreadResult]):
    """One remote run started by :meth:`AgentRunJob.trigger` (a Prefect ``JobRun``).

    Not a block: it holds the job it came from and the run as last seen.

    Args:
        job: The job block that started the run.
        run: The run as created.

    Examples:
        ```python
        from prefect_agent_runs import AgentRunJob

        job = AgentRunJob.load("BLOCK_NAME")
        agent_run = job.trigger()
        agent_run.wait_for_completion()
        print(agent_run.fetch_result().text)
        ```
    """

    def __init__(self, job: AgentRunJob, run: Run) -> None:
        self.job = job
        self._run = run
        self._result: ThreadResult | None = None

    def __repr__(self) -> str:
        return f"AgentRun({self._run.describe()})"

    @property
    def run(self) -> Run:
        """The run as last seen (updated by every method that reads it).

        Examples:
            ```python
            print(agent_run.run.id, agent_run.run.thread_id, agent_run.run.status)
            ```
        """
        return self._run

    # -- wait_for_completion --------------------------------------------------------------

    async def await_for_completion(self) -> Run:
        """Wait until the run is terminal (async twin of :meth:`wait_for_completion`).

        Returns:
            The run in its terminal state.

        Examples:
            ```python
            agent_run = await AgentRunJob.load("BLOCK_NAME").atrigger()
            run = await agent_run.await_for_completion()
            ```
        """
        job = self.job
        logger = self.logger

        def on_change(changed: Run) -> None:
            logger.info("%s is now %s", changed.describe(), changed.status.value)

        async with _client(job.credentials) as client:
            policy = job.poll_policy()
            waited = await client.wait_for_run(self._run, policy=policy, on_change=on_change)
            self._run = waited
            logger.info("%s ended as %s", waited.describe(), waited.status.value)
            raise_for_outcome(waited)
            if job.collect_result:
                self._result = await client.get_result(waited)
        return waited

    @async_dispatch(await_for_completion)
    def wait_for_completion(self) -> Run:  # type: ignore[override]
        """Wait until the run is terminal, within the job's ``timeout_seconds``.

        Status changes are logged once each. When the job's ``timeout_seconds`` passes,
        the run is cancelled (``cancel_on_timeout``); the run is cancelled too when the
        wait itself is cancelled. With ``collect_result``, the thread's result is read as
        soon as the run completes, so :meth:`fetch_result` needs no further request.

        Returns:
            The run in its terminal state.

        Raises:
            RunTimedOut: The job's ``timeout_seconds`` passed first.
            RunFailed: The run failed.
            RunCancelled: The run was cancelled or interrupted.
            RunExpired: The run expired or timed out on the server.

        Examples:
            ```python
            agent_run = job.trigger()
            run = agent_run.wait_for_completion()
            ```
        """
        return _sync(self.await_for_completion())

    # -- fetch_result ---------------------------------------------------------------------

    async def afetch_result(self) -> ThreadResult:
        """What the run wrote to its thread (async twin of :meth:`fetch_result`).

        Returns:
            The run's thread result.

        Examples:
            ```python
            await agent_run.await_for_completion()
            print((await agent_run.afetch_result()).text)
            ```
        """
        if self._result is None:
            async with _client(self.job.credentials) as client:
                self._result = await client.get_result(self._run)
        return self._result

    @async_dispatch(afetch_result)
    def fetch_result(self) -> ThreadResult:  # type: ignore[override]
        """What the run wrote to its thread: messages, state values, last assistant text.

        Returns:
            The run's :class:`~prefect_agent_runs.models.ThreadResult` (read once, then
            kept).

        Examples:
            ```python
            agent_run.wait_for_completion()
            print(agent_run.fetch_result().text)
            ```
        """
        return _sync(self.afetch_result())

    # -- get_status -----------------------------------------------------------------------

    async def aget_status(self) -> RunStatus:
        """Read the run's status now (async twin of :meth:`get_status`).

        Returns:
            The normalized status.

        Examples:
            ```python
            status = await agent_run.aget_status()
            ```
        """
        async with _client(self.job.credentials) as client:
            current = await client.get_run(self._run.id, thread_id=self._run.thread_id)
        self._run = current
        return current.status

    @async_dispatch(aget_status)
    def get_status(self) -> RunStatus:
        """Read the run's status now (and update :attr:`run`).

        Returns:
            The normalized status (``RunStatus.RUNNING``, ``RunStatus.COMPLETED``...).

        Examples:
            ```python
            if agent_run.get_status().is_terminal:
                print(agent_run.run.raw_status)
            ```
        """
        return _sync(self.aget_status())

    # -- cancel ---------------------------------------------------------------------------

    async def acancel(self) -> Run:
        """Cancel the run (async twin of :meth:`cancel`).

        Returns:
            The run as read after the cancel.

        Examples:
            ```python
            await agent_run.acancel()
            ```
        """
        async with _client(self.job.credentials) as client:
            cancelled = await client.cancel_run(self._run.id, thread_id=self._run.thread_id)
        self._run = cancelled
        self.logger.info("cancel requested for %s", cancelled.describe())
        return cancelled

    @async_dispatch(acancel)
    def cancel(self) -> Run:
        """Cancel the run; harmless on a finished run and when repeated.

        Returns:
            The run as read after the cancel.

        Examples:
            ```python
            agent_run = job.trigger()
            agent_run.cancel()
            ```
        """
        return _sync(self.acancel())


class AgentRunJob(JobBlock):  # type: ignore[type-arg]
    """A saved remote run to trigger: where (credentials), what (assistant, input) and how
    long to wait.

    ``trigger()`` starts a run and returns an :class:`AgentRun` to wait on, read, and
    cancel. Works with every backend's credentials block.

    Attributes:
        credentials: The backend's credentials block.
        assistant_id: The assistant (Assistants API) or graph / assistant (LangGraph).
        input: The run's input (LangGraph ``input``).
        message: A user message to add before the run starts.
        thread_id: Run on this thread; empty starts a new thread each time.
        metadata: Metadata stored on the run.
        options: Backend-specific fields passed through to the create request.
        timeout_seconds: How long to wait for a terminal state (empty: no limit).
        cancel_on_timeout: Cancel the remote run when that deadline passes.
        poll_interval_seconds: The first interval between two polls.
        max_poll_interval_seconds: The polling backoff's cap.
        collect_result: Read the thread's result as soon as the run completes.

    Examples:
        Trigger a saved job from a flow, wait, and read the answer:
        ```python
        from prefect import flow
        from prefect_agent_runs import AgentRunJob

        @flow
        def ask() -> str | None:
            job = AgentRunJob.load("BLOCK_NAME")
            agent_run = job.trigger()
            agent_run.wait_for_completion()
            return agent_run.fetch_result().text
        ```

        Create one:
        ```python
        from prefect_agent_runs import AgentRunJob, LangGraphCredentials

        job = AgentRunJob(
            credentials=LangGraphCredentials(base_url="http://127.0.0.1:8123"),
            assistant_id="agent",
            message="Summarize today's tickets.",
            timeout_seconds=900,
        )
        job.save("daily-summary")
        ```
    """

    _block_type_name: ClassVar[str | None] = "Agent Run Job"
    _description: ClassVar[str | None] = (
        "A remote agent, assistant or workflow run to trigger, wait for and read back."
    )
    _documentation_url: ClassVar[HttpUrl | None] = HttpUrl(_DOCS)
    _logo_url: ClassVar[HttpUrl | None] = logo_url("agent_run_job")

    credentials: AnyCredentials = Field(default=..., description="The backend's credentials block.")

    @classmethod
    def model_json_schema(  # type: ignore[override]  # Prefect's Block signature
        cls,
        by_alias: bool = True,
        ref_template: str = "#/definitions/{model}",
        schema_generator: type[GenerateJsonSchema] = GenerateJsonSchema,
        mode: JsonSchemaMode = "validation",
    ) -> dict[str, Any]:
        """Prefect's block schema, ``credentials`` offering each concrete credentials block.

        Computed once per set of registered credentials blocks (Prefect asks for it several
        times per registration, and pydantic does not cache it).
        """
        key = (cls, by_alias, ref_template, schema_generator, mode, tuple(credentials_classes()))
        schema = _SCHEMAS.get(key)
        if schema is None:
            schema = super().model_json_schema(by_alias, ref_template, schema_generator, mode)
            schema = _SCHEMAS[key] = _offer_concrete_credentials(schema)
        return copy.deepcopy(schema)

    @classmethod
    async def aregister_type_and_schema(cls, client: Any = None) -> None:
        """Register the job's block type, and first every concrete credentials block it
        offers (never the shared base, which is no block type)."""
        for block in credentials_classes():
            await block.aregister_type_and_schema(client)
        kwargs = {"client": client} if client is not None else {}
        with registering_nested_credentials():
            await super().aregister_type_and_schema(**kwargs)

    @classmethod
    @async_dispatch(aregister_type_and_schema)
    def register_type_and_schema(cls, client: Any = None) -> None:
        """Register the job's block type, and first every concrete credentials block it
        offers (awaitable in async code, like Prefect's own)."""
        for block in credentials_classes():
            block.register_type_and_schema(_sync=True)
        with registering_nested_credentials():
            super().register_type_and_schema(_sync=True)  # type: ignore[call-arg]

    @classmethod
    def _from_block_document(cls, block_document: Any) -> Any:
        """Load, giving saved credentials their own block class (named by the reference's
        block type: Prefect would build the field's declared base class)."""
        refs = block_document.block_document_references or {}
        data = block_document.data
        ref = refs.get("credentials")
        nested = data.get("credentials") if isinstance(data, dict) else None
        if isinstance(ref, dict) and isinstance(nested, dict) and "block_type_slug" not in nested:
            block_type = (ref.get("block_document") or {}).get("block_type") or {}
            slug = block_type.get("slug")
            if isinstance(slug, str):
                block_document = block_document.model_copy(
                    update={"data": {**data, "credentials": {**nested, "block_type_slug": slug}}}
                )
        return super()._from_block_document(block_document)

    @field_validator("credentials", mode="before")
    @classmethod
    def _credentials_of_their_own_class(cls, value: Any) -> Any:
        """A dict naming its block type becomes that block class (not the shared base)."""
        if isinstance(value, dict) and isinstance(value.get("block_type_slug"), str):
            data = dict(value)
            slug = data.pop("block_type_slug")
            block_class = _credentials_class_for_slug(slug)
            if block_class is not None:
                return block_class.model_validate(data)
        return value

    assistant_id: str = Field(
        default=...,
        description="The assistant (Assistants API) or graph / assistant id (LangGraph).",
    )
    input: dict[str, Any] | None = Field(
        default=None, description="The run's input (LangGraph `input`)."
    )
    message: str | None = Field(
        default=None, description="A user message added before the run starts."
    )
    thread_id: str | None = Field(
        default=None, description="Run on this thread; empty starts a new thread each time."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Metadata stored on the run."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend-specific fields passed through to the create request.",
    )
    timeout_seconds: float | None = Field(
        default=None,
        ge=0,
        description="How long to wait for a terminal state, in seconds; empty: no limit.",
    )
    cancel_on_timeout: bool = Field(
        default=True, description="Cancel the remote run when `timeout_seconds` passes."
    )
    poll_interval_seconds: float = Field(
        default=1.0, gt=0, description="The first interval between two polls, in seconds."
    )
    max_poll_interval_seconds: float = Field(
        default=15.0, gt=0, description="The polling backoff's cap, in seconds."
    )
    collect_result: bool = Field(
        default=True,
        description="Read the thread's result as soon as the run completes.",
    )

    def to_request(self) -> RunRequest:
        """The :class:`~prefect_agent_runs.models.RunRequest` this job starts.

        Returns:
            The request built from the job's fields.

        Examples:
            ```python
            request = AgentRunJob.load("BLOCK_NAME").to_request()
            ```
        """
        return RunRequest(
            assistant_id=self.assistant_id,
            thread_id=self.thread_id,
            input=self.input,
            message=self.message,
            metadata=dict(self.metadata),
            options=dict(self.options),
        )

    def poll_policy(self) -> PollPolicy:
        """The wait policy this job's fields describe.

        Returns:
            A :class:`~prefect_agent_runs.waiting.PollPolicy`.

        Examples:
            ```python
            policy = AgentRunJob.load("BLOCK_NAME").poll_policy()
            ```
        """
        return PollPolicy(
            timeout_seconds=self.timeout_seconds,
            cancel_on_timeout=self.cancel_on_timeout,
            poll_interval_seconds=self.poll_interval_seconds,
            max_poll_interval_seconds=max(
                self.max_poll_interval_seconds, self.poll_interval_seconds
            ),
        )

    async def atrigger(self) -> AgentRun:
        """Start the run (async twin of :meth:`trigger`).

        Returns:
            The started run, to wait on.

        Examples:
            ```python
            job = await AgentRunJob.load("BLOCK_NAME")
            agent_run = await job.atrigger()
            ```
        """
        async with _client(self.credentials) as client:
            run = await client.create_run(self.to_request())
        self.logger.info(
            "Triggered %s run %s on thread %s for assistant %r",
            run.backend,
            run.id,
            run.thread_id,
            self.assistant_id,
        )
        return AgentRun(self, run)

    @async_dispatch(atrigger)
    def trigger(self) -> AgentRun:  # type: ignore[override]
        """Start the run; the create is sent once and made duplicate-safe by the client.

        Returns:
            An :class:`AgentRun` to wait on (``wait_for_completion()``), read
            (``fetch_result()``, ``get_status()``) or cancel (``cancel()``).

        Examples:
            ```python
            agent_run = AgentRunJob.load("BLOCK_NAME").trigger()
            print(agent_run.run.id, agent_run.run.thread_id)
            ```
        """
        return _sync(self.atrigger())
