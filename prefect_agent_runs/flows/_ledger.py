"""The batch ledger: which run each item of a batch got, persisted in Prefect's result storage.

Why: a rerun with the same ``batch_key`` must find the runs of the earlier attempt, and an
``on_cancellation`` / ``on_crashed`` hook (which runs in the runner process under workers,
without the flow's memory) must find the runs and the credentials again. LangGraph can be
asked by metadata; other platforms cannot, so every batch keeps a small JSON document in
Prefect's default result storage (``prefect.results.get_default_result_storage()``,
``~/.prefect/storage`` unless configured):

* ``prefect-agent-runs/batches/<slug>-<hash>.json``: the batch key, the flow runs that
  worked on it, how to get the credentials back, and ``key -> {run_id, thread_id, status}``;
* ``prefect-agent-runs/flow-runs/<flow_run_id>.json``: ``{"batch_key": ...}``, so that a hook
  finds a batch whose key was generated (not a flow parameter).

Credentials: a saved block is recorded by reference (block type slug and document name) and
loaded again with its secrets by the hook. An unsaved block is recorded *with its secrets*
(``model_dump(context={"include_secrets": True})``) because nothing else could open the
API again from another process; that storage is the user's own result storage, the same
place Prefect writes task results to. Save the credentials block to keep secrets out of it.

Writes are throttled: at most one every ``flush_interval_seconds`` (or sooner after
``flush_every`` new runs), and a final flush at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from prefect.blocks.core import Block
from prefect.filesystems import WritableFileSystem

from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.models import Run, RunStatus

__all__ = ["BatchLedger", "batch_path", "flow_run_path", "load_credentials", "slugify"]

logger = logging.getLogger("prefect_agent_runs.flows.ledger")

ROOT = "prefect-agent-runs"


def slugify(value: str, *, max_length: int = 80) -> str:
    """A lowercase-dash slug (Prefect artifact keys allow ``[a-z0-9-]`` only)."""
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)[:max_length].strip("-")
    return slug or "batch"


def batch_path(batch_key: str) -> str:
    """Where a batch's ledger lives in the result storage."""
    digest = hashlib.sha1(batch_key.encode()).hexdigest()[:12]
    return f"{ROOT}/batches/{slugify(batch_key, max_length=60)}-{digest}.json"


def flow_run_path(flow_run_id: str) -> str:
    """Where the pointer from a flow run to its batch key lives."""
    return f"{ROOT}/flow-runs/{slugify(flow_run_id)}.json"


async def _storage() -> WritableFileSystem:
    from prefect.results import aget_default_result_storage

    return await aget_default_result_storage()


async def _read(storage: WritableFileSystem, path: str) -> dict[str, Any] | None:
    reader = getattr(storage, "aread_path", None) or storage.read_path
    try:
        data = reader(path)
        if inspect.isawaitable(data):
            data = await data
    except (ValueError, FileNotFoundError, OSError):
        return None  # LocalFileSystem raises ValueError for a missing path
    except Exception as exc:  # remote storages raise their own "not found"
        logger.debug("could not read %s from result storage: %s", path, exc)
        return None
    try:
        loaded = json.loads(data)
    except (TypeError, ValueError):
        logger.warning("ignoring unreadable batch ledger %s", path)
        return None
    return loaded if isinstance(loaded, dict) else None


async def _write(storage: WritableFileSystem, path: str, document: Mapping[str, Any]) -> None:
    writer = getattr(storage, "awrite_path", None) or storage.write_path
    result = writer(path, json.dumps(document, default=str).encode())
    if inspect.isawaitable(result):
        await result


def credentials_reference(credentials: AgentRunsCredentials) -> dict[str, Any]:
    """How a hook gets these credentials back (see the module docstring)."""
    slug = credentials.get_block_type_slug()
    name = getattr(credentials, "_block_document_name", None)
    is_anonymous = getattr(credentials, "_is_anonymous", False)
    if name and not is_anonymous:
        return {"block_type_slug": slug, "block_document_name": name}
    data = credentials.model_dump(mode="json", context={"include_secrets": True})
    data["block_type_slug"] = slug
    return {"block_type_slug": slug, "data": data}


async def load_credentials(reference: Mapping[str, Any]) -> AgentRunsCredentials | None:
    """Rebuild credentials recorded by :func:`credentials_reference` (None if impossible)."""
    slug = reference.get("block_type_slug")
    try:
        if reference.get("block_document_name"):
            cls = Block.get_block_class_from_key(str(slug)) if slug else AgentRunsCredentials
            loaded = await cls.aload(str(reference["block_document_name"]))
            return loaded if isinstance(loaded, AgentRunsCredentials) else None
        data = reference.get("data")
        if isinstance(data, Mapping):
            return AgentRunsCredentials.model_validate(dict(data))
    except Exception as exc:
        logger.error("could not load the batch's credentials (%s): %s", slug, exc)
    return None


class BatchLedger:
    """Runs of one batch, persisted (throttled) to Prefect's result storage.

    Args:
        batch_key: The batch.
        flush_interval_seconds: Shortest time between two writes.
        flush_every: Write as soon as this many new runs were recorded.
        storage: The file system (default: Prefect's default result storage).
    """

    def __init__(
        self,
        batch_key: str,
        *,
        flush_interval_seconds: float = 0.5,
        flush_every: int = 50,
        storage: WritableFileSystem | None = None,
    ) -> None:
        self.batch_key = batch_key
        self.path = batch_path(batch_key)
        self.flush_interval_seconds = flush_interval_seconds
        self.flush_every = flush_every
        self._storage = storage
        self.document: dict[str, Any] = {"batch_key": batch_key, "flow_runs": [], "runs": {}}
        self._pending = 0
        self._dirty = False
        self._last_write = 0.0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def storage(self) -> WritableFileSystem:
        """The result storage (resolved once)."""
        if self._storage is None:
            self._storage = await _storage()
        return self._storage

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        """``key -> {"run_id", "thread_id", "status", "backend"}``."""
        runs = self.document.setdefault("runs", {})
        assert isinstance(runs, dict)
        return runs

    async def load(self) -> BatchLedger:
        """Read the ledger of an earlier attempt, if any (keeps the default otherwise)."""
        found = await _read(await self.storage(), self.path)
        if found and found.get("batch_key") == self.batch_key:
            found.setdefault("runs", {})
            found.setdefault("flow_runs", [])
            self.document = found
        return self

    @classmethod
    async def for_flow_run(cls, flow_run_id: str) -> BatchLedger | None:
        """The ledger of the batch a flow run worked on (via its pointer), if recorded."""
        pointer = await _read(await _storage(), flow_run_path(flow_run_id))
        if not pointer or not pointer.get("batch_key"):
            return None
        return await cls(str(pointer["batch_key"])).load()

    def known_runs(self, backend: str) -> dict[str, Run]:
        """The recorded runs as :class:`Run` placeholders (status UNKNOWN: read them again)."""
        out: dict[str, Run] = {}
        for key, entry in self.runs.items():
            if isinstance(entry, dict) and entry.get("run_id"):
                out[key] = Run(
                    id=str(entry["run_id"]),
                    thread_id=entry.get("thread_id"),
                    status=RunStatus.UNKNOWN,
                    backend=str(entry.get("backend") or backend),
                )
        return out

    async def start(
        self, *, flow_run_id: str | None, credentials: AgentRunsCredentials | None
    ) -> None:
        """Record the flow run and the credentials, write now, and start the flusher."""
        if flow_run_id and flow_run_id not in self.document["flow_runs"]:
            self.document["flow_runs"].append(flow_run_id)
        if credentials is not None:
            self.document["credentials"] = credentials_reference(credentials)
        self.document["backend"] = getattr(credentials, "backend", None)
        if flow_run_id:
            await _write(
                await self.storage(), flow_run_path(flow_run_id), {"batch_key": self.batch_key}
            )
        await self.flush()
        self._flusher = asyncio.ensure_future(self._flush_loop())

    def record(self, key: str, run: Run) -> None:
        """Remember ``key``'s run (written at the next throttled flush)."""
        entry = self.runs.get(key)
        new = not isinstance(entry, dict) or entry.get("run_id") != run.id
        self.runs[key] = {
            "run_id": run.id,
            "thread_id": run.thread_id,
            "status": run.status.value,
            "backend": run.backend,
        }
        self._dirty = True
        if new:
            self._pending += 1
            if self._pending >= self.flush_every:
                self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_seconds)
            self._wake.clear()
            if self._dirty:
                try:
                    await self.flush()
                except Exception as exc:
                    logger.warning("could not write the batch ledger %s: %s", self.path, exc)

    async def flush(self) -> None:
        """Write the ledger now."""
        async with self._lock:
            self._dirty = False
            self._pending = 0
            self._last_write = time.monotonic()
            await _write(await self.storage(), self.path, self.document)

    async def close(self) -> None:
        """Stop the flusher and write the last state (shielded from cancellation)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(BaseException):
                await self._flusher
            self._flusher = None
        try:
            await asyncio.shield(self.flush())
        except Exception as exc:
            logger.warning("could not write the batch ledger %s: %s", self.path, exc)

    def credentials_reference(self) -> dict[str, Any] | None:
        """The recorded credentials reference, if any."""
        ref = self.document.get("credentials")
        return ref if isinstance(ref, dict) else None
