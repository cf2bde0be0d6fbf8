"""The batch ledger: which run each item of a batch got, persisted in Prefect's result storage.

Why: a rerun with the same ``batch_key`` must find the runs of the earlier attempt, and an
``on_cancellation`` / ``on_crashed`` hook (which runs in the runner process under workers,
without the flow's memory) must find the runs and the credentials again. LangGraph can be
asked by metadata; other platforms cannot, so every batch keeps an append-only log of JSON
lines in Prefect's default result storage (``~/.prefect/storage`` unless configured):

* ``prefect-agent-runs/ledgers/<slug>-<hash>.jsonl``: records ``batch`` (the flow run,
  the credentials reference), ``creating`` (a create is about to be sent for a key) and
  ``run`` (the key's run and its last status). The last record of a key wins;
* ``prefect-agent-runs/flow-runs/<flow_run_id>.json``: ``{"batch_key": ...}``, so that a hook
  finds a batch whose key was generated (not a flow parameter).

Durability: a ``creating`` record is in the log before its create is sent, and the ``run``
record of a fresh create before the item goes on. A crash of the process therefore leaves
at most the creates in flight at that instant as "maybe created": the rerun and the hook
report them (:attr:`BatchLedger.in_flight`).

* On a local file system the record is appended at once, in the event loop (one
  unbuffered ``write``, microseconds; the file stays open for the batch): from then on the
  kernel holds it, and a killed or crashed process loses nothing. The one writer task then
  ``fsync``s in a thread, one ``fsync`` for every record written meanwhile (group commit),
  at most one every ``sync_interval_seconds`` (0.1 s), so only a crash of the machine
  within that window can lose the last records. Waiting for the ``fsync`` itself cost each
  create 64 ms at 10,000 items (the loop's turns, not the disk's 0.3 ms); an ``fsync`` for
  every turn of the writer was 31 a second, each a thread hop.
* On another storage block the caller waits for its record's write (a new segment; one
  write takes every record that arrived during the one before).

Status updates are written every ``flush_interval_seconds``. Each write costs what changed,
never the whole batch. :meth:`BatchLedger.flush` and :meth:`BatchLedger.close` return once
everything is written and ``fsync``'ed.

Credentials (semantics 7): the ledger never holds a secret. A saved block is recorded by
reference (block type slug and document name). An unsaved block is recorded by its
non-secret fields plus, for each secret, the name of the environment variable that holds
the same value (as the CLI's ``--api-key-env``); a secret found in no environment variable
is not recorded, and the hook then says that only in-process cancellation was possible.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from pydantic import SecretStr

from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.errors import AgentRunsError
from prefect_agent_runs.models import Run, RunStatus

__all__ = [
    "BatchLedger",
    "LedgerUnreadable",
    "batch_path",
    "credentials_reference",
    "flow_run_path",
    "load_credentials",
    "slugify",
]

logger = logging.getLogger("prefect_agent_runs.flows.ledger")

ROOT = "prefect-agent-runs"


class LedgerUnreadable(AgentRunsError):
    """The batch ledger exists (or may) but cannot be read: resuming would start items twice."""


def slugify(value: str, *, max_length: int = 80) -> str:
    """A lowercase-dash slug (Prefect artifact keys allow ``[a-z0-9-]`` only)."""
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)[:max_length].strip("-")
    return slug or "batch"


def batch_path(batch_key: str) -> str:
    """Where a batch's ledger lives in the result storage."""
    digest = hashlib.sha1(batch_key.encode()).hexdigest()[:12]
    return f"{ROOT}/ledgers/{slugify(batch_key, max_length=60)}-{digest}.jsonl"


def flow_run_path(flow_run_id: str) -> str:
    """Where the pointer from a flow run to its batch key lives."""
    return f"{ROOT}/flow-runs/{slugify(flow_run_id)}.json"


async def _storage() -> WritableFileSystem:
    from prefect.results import aget_default_result_storage

    return await aget_default_result_storage()


def _missing(exc: BaseException) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    # LocalFileSystem raises ValueError("Path ... does not exist"); remote blocks say so too
    return isinstance(exc, ValueError) and "does not exist" in str(exc)


async def _read_bytes(storage: WritableFileSystem, path: str) -> bytes | None:
    """The file's bytes, None when it does not exist; any other failure raises."""
    reader = getattr(storage, "aread_path", None) or storage.read_path
    try:
        data = reader(path)
        if inspect.isawaitable(data):
            data = await data
    except Exception as exc:
        if _missing(exc):
            return None
        raise LedgerUnreadable(
            f"cannot read the batch ledger {path} from the result storage "
            f"({type(exc).__name__}: {exc}); not resuming, since that could start items twice"
        ) from exc
    return data if isinstance(data, bytes) else str(data).encode()


async def _write(storage: WritableFileSystem, path: str, data: bytes) -> None:
    writer = getattr(storage, "awrite_path", None) or storage.write_path
    result = writer(path, data)
    if inspect.isawaitable(result):
        await result


def _secret_env(value: str) -> str | None:
    for name, env_value in os.environ.items():
        if env_value == value:
            return name
    return None


def credentials_reference(credentials: AgentRunsCredentials) -> dict[str, Any] | None:
    """How a hook gets these credentials back, without a secret (see the module docstring).

    Returns:
        ``{"block_type_slug", "block_document_name"}`` for a saved block;
        ``{"block_type_slug", "data", "secrets_from_env"}`` for an unsaved one whose
        secrets are all in environment variables; None otherwise.
    """
    slug = credentials.get_block_type_slug()
    name = getattr(credentials, "_block_document_name", None)
    if name and not getattr(credentials, "_is_anonymous", False):
        return {"block_type_slug": slug, "block_document_name": name}
    data: dict[str, Any] = {}
    from_env: dict[str, str] = {}
    for field in type(credentials).model_fields:
        value = getattr(credentials, field)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if not secret:
                continue
            env = _secret_env(secret)
            if env is None:
                return None
            from_env[field] = env
        else:
            data[field] = value
    data = json.loads(json.dumps(data, default=str))
    return {"block_type_slug": slug, "data": data, "secrets_from_env": from_env}


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
            fields = dict(data)
            for field, env in dict(reference.get("secrets_from_env") or {}).items():
                if env not in os.environ:
                    logger.error("the environment variable %s (for %s) is not set", env, field)
                    return None
                fields[field] = os.environ[env]
            fields["block_type_slug"] = slug
            return AgentRunsCredentials.model_validate(fields)
    except Exception as exc:
        logger.error("could not load the batch's credentials (%s): %s", slug, exc)
    return None


class _Log:
    """Append-only JSON lines: a local file (write now, fsync after) or segments on a block."""

    def __init__(self, storage: WritableFileSystem, path: str) -> None:
        self.storage = storage
        self.path = path
        self.local: Path | None = None
        if isinstance(storage, LocalFileSystem):
            base = Path(str(storage.basepath or ".")).expanduser()
            self.local = base / path
        self.segments = 0
        self.unsynced = False
        self.torn = False
        self._handle: BinaryIO | None = None

    async def read(self) -> list[dict[str, Any]]:
        if self.local is not None:
            try:
                data = await asyncio.to_thread(self.local.read_bytes)
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise LedgerUnreadable(
                    f"cannot read the batch ledger {self.local} ({type(exc).__name__}: {exc}); "
                    "not resuming, since that could start items twice"
                ) from exc
            return _parse(data, str(self.local))
        head = await _read_bytes(self.storage, f"{self.path}/head.json")
        if head is None:
            return []
        self.segments = int(json.loads(head).get("segments", 0))
        records: list[dict[str, Any]] = []
        for index in range(self.segments):
            segment = await _read_bytes(self.storage, f"{self.path}/{index:06d}.jsonl")
            records += _parse(segment or b"", self.path)
        return records

    async def append(self, records: list[dict[str, Any]]) -> None:
        """Write records to a storage block other than the local file system (a segment)."""
        await _write(self.storage, f"{self.path}/{self.segments:06d}.jsonl", _encode(records))
        self.segments += 1
        await _write(
            self.storage, f"{self.path}/head.json", json.dumps({"segments": self.segments}).encode()
        )

    def write_local(self, records: list[dict[str, Any]]) -> None:
        """Append records to the local file now (the kernel holds them; not yet fsync'ed)."""
        self._write_local(_encode(records))
        self.unsynced = True

    def _write_local(self, data: bytes) -> None:
        # one unbuffered handle for the batch: nothing of a failed write stays behind in a
        # buffer, and an open, a mkdir and a close per write cost more than the write
        if self._handle is None:
            assert self.local is not None
            self.local.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.local, "ab", buffering=0)  # noqa: SIM115 - see close()
        if self.torn:  # a failed write may have left half a line: end it (_parse skips it)
            data = b"\n" + data
        view = memoryview(data)
        try:
            while view:
                written = self._handle.write(view)
                if not written:
                    raise OSError(f"{self.local}: the write took no bytes")
                view = view[written:]
        except BaseException:
            self.torn = True
            raise
        self.torn = False

    async def sync(self) -> bool:
        """``fsync`` the local file (in a thread) if anything was written since the last one."""
        if not self.unsynced or self._handle is None:
            return False
        self.unsynced = False
        try:
            await asyncio.to_thread(os.fsync, self._handle.fileno())
        except BaseException:
            self.unsynced = True
            raise
        return True

    async def close(self) -> None:
        """Close the local file (the next write opens it again)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            await asyncio.to_thread(handle.close)


def _encode(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, default=str).encode() + b"\n" for r in records)


def _parse(data: bytes, where: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            # a line cut short by a crash mid-write is the last one; anything else is damage
            logger.warning("%s, line %d: skipping an unreadable ledger record", where, number)
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


class BatchLedger:
    """Runs of one batch, in an append-only log in Prefect's result storage.

    Args:
        batch_key: The batch.
        flush_interval_seconds: Longest time a status update waits before it is written.
        sync_interval_seconds: Least time between two ``fsync``s of a local file (records
            are written at once; this bounds what a crash of the machine can lose).
        storage: The file system (default: Prefect's default result storage).
    """

    def __init__(
        self,
        batch_key: str,
        *,
        flush_interval_seconds: float = 0.5,
        sync_interval_seconds: float = 0.1,
        storage: WritableFileSystem | None = None,
    ) -> None:
        self.batch_key = batch_key
        self.path = batch_path(batch_key)
        self.flush_interval_seconds = flush_interval_seconds
        self.sync_interval_seconds = sync_interval_seconds
        self._storage = storage
        self._log: _Log | None = None
        self.runs: dict[str, dict[str, Any]] = {}
        """``key -> {"run_id", "thread_id", "status", "backend"}``."""
        self.in_flight: set[str] = set()
        """Keys whose create was sent but whose run was never recorded (maybe created)."""
        self.flow_runs: list[str] = []
        self.credentials: dict[str, Any] | None = None
        self.backend: str | None = None
        self.writes = 0
        """Appends to the log (a local write or a segment)."""
        self.syncs = 0
        """``fsync`` calls on the local file (each covers every write before it)."""
        self._pending: list[dict[str, Any]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def storage(self) -> WritableFileSystem:
        """The result storage (resolved once)."""
        if self._storage is None:
            self._storage = await _storage()
        return self._storage

    async def _the_log(self) -> _Log:
        if self._log is None:
            self._log = _Log(await self.storage(), self.path)
        return self._log

    async def load(self) -> BatchLedger:
        """Read the log of earlier attempts, if any.

        Raises:
            LedgerUnreadable: The ledger could not be read (a permission or storage error);
                a missing ledger is not an error.
        """
        for record in await (await self._the_log()).read():
            self._apply(record)
        return self

    def _apply(self, record: Mapping[str, Any]) -> None:
        kind = record.get("t")
        key = str(record.get("key", ""))
        if kind == "run" and record.get("run_id"):
            self.runs[key] = {
                "run_id": str(record["run_id"]),
                "thread_id": record.get("thread_id"),
                "status": record.get("status"),
                "backend": record.get("backend"),
            }
            self.in_flight.discard(key)
        elif kind == "creating" and key not in self.runs:
            self.in_flight.add(key)
        elif kind == "refused":
            self.in_flight.discard(key)
        elif kind == "batch":
            if record.get("flow_run") and record["flow_run"] not in self.flow_runs:
                self.flow_runs.append(str(record["flow_run"]))
            if "credentials" in record:
                self.credentials = record.get("credentials")
            self.backend = record.get("backend") or self.backend

    @classmethod
    async def for_flow_run(cls, flow_run_id: str) -> BatchLedger | None:
        """The ledger of the batch a flow run worked on (via its pointer), if recorded."""
        data = await _read_bytes(await _storage(), flow_run_path(flow_run_id))
        pointer = json.loads(data) if data else None
        if not isinstance(pointer, dict) or not pointer.get("batch_key"):
            return None
        return await cls(str(pointer["batch_key"])).load()

    def known_runs(self, backend: str) -> dict[str, Run]:
        """The recorded runs as :class:`Run` placeholders (status UNKNOWN: read them again)."""
        return {
            key: Run(
                id=str(entry["run_id"]),
                thread_id=entry.get("thread_id"),
                status=RunStatus.UNKNOWN,
                backend=str(entry.get("backend") or backend),
            )
            for key, entry in self.runs.items()
        }

    async def start(
        self, *, flow_run_id: str | None, credentials: AgentRunsCredentials | None
    ) -> None:
        """Record the flow run and the credentials reference (durably); start the writer."""
        reference = credentials_reference(credentials) if credentials is not None else None
        self.credentials = reference
        self.backend = getattr(credentials, "backend", None)
        if flow_run_id:
            self.flow_runs.append(flow_run_id)
            pointer = json.dumps({"batch_key": self.batch_key}).encode()
            await _write(await self.storage(), flow_run_path(flow_run_id), pointer)
        await self._append(
            {
                "t": "batch",
                "batch_key": self.batch_key,
                "flow_run": flow_run_id,
                "backend": self.backend,
                "credentials": reference,
            }
        )
        self._writer = asyncio.ensure_future(self._write_loop())
        self._ticker = asyncio.ensure_future(self._tick_loop())

    @staticmethod
    def _run_record(key: str, run: Run) -> dict[str, Any]:
        return {
            "t": "run",
            "key": key,
            "run_id": run.id,
            "thread_id": run.thread_id,
            "status": run.status.value,
            "backend": run.backend,
        }

    async def creating(self, key: str) -> None:
        """Durably record that a create is about to be sent for ``key``."""
        self.in_flight.add(key)
        await self._append({"t": "creating", "key": key})

    async def created(self, key: str, run: Run) -> None:
        """Durably record ``key``'s run (a fresh create or a re-attachment)."""
        self._apply(self._run_record(key, run))
        await self._append(self._run_record(key, run))

    def refused(self, key: str) -> None:
        """A create was refused (nothing exists): the key is no longer in flight."""
        self.in_flight.discard(key)
        self._pending.append({"t": "refused", "key": key})

    def record(self, key: str, run: Run) -> None:
        """Remember ``key``'s run and status (written at the next flush)."""
        record = self._run_record(key, run)
        entry = self.runs.get(key)
        if entry is not None and entry["run_id"] == run.id and entry["status"] == run.status.value:
            return
        self._apply(record)
        self._pending.append(record)

    async def _append(self, record: dict[str, Any]) -> None:
        """Put ``record`` in the log (with whatever waits before it) before returning.

        Local file: written now, ``fsync``'ed by the writer soon after. Another storage
        block: the caller waits for the write (group commit).
        """
        self._pending.append(record)
        log = await self._the_log()
        if log.local is not None:
            records, self._pending = self._pending, []
            try:
                log.write_local(records)
            except BaseException:
                self._pending[:0] = records[:-1]  # the others go with the next write
                raise
            self.writes += 1
            if self._writer is None or self._writer.done():
                await self._commit()  # not started (or closed): fsync it here
            else:
                self._wake.set()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._writer is None or self._writer.done():
            await self._commit()  # not started (or closed): write it here
        else:
            self._wake.set()
        await waiter

    async def _commit(self) -> None:
        """Write every pending record (one append or segment) and ``fsync`` what was written
        locally; the waiters are told once their records are there."""
        async with self._lock:
            log = await self._the_log()
            records, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            try:
                try:
                    if records and log.local is not None:
                        log.write_local(records)
                    elif records:
                        await log.append(records)
                except BaseException:
                    self._pending[:0] = records  # not written: they go with the next write
                    raise
                self.writes += bool(records)
                if await log.sync():
                    self.syncs += 1
            except BaseException as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                raise
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _write_loop(self) -> None:
        """The one writer: each pass writes (and ``fsync``s) everything that arrived during
        the last one.

        A single task, not one commit per caller: 256 creates waiting on a lock took one
        event-loop turn each to find their record written (180 ms a create at 10,000 items).
        """
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._commit()
            except Exception as exc:  # the waiters got it; the records wait for the next
                logger.warning("could not write the batch ledger %s: %s", self.path, exc)
            if self._log is not None and self._log.local is not None:
                # nobody waits for a local fsync: space them (a block's waiters are not kept)
                await asyncio.sleep(self.sync_interval_seconds)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_seconds)
            if self._pending:
                self._wake.set()

    async def flush(self) -> None:
        """Write the pending records now, and ``fsync`` everything written."""
        await self._commit()

    async def close(self) -> None:
        """Stop the writer and write the last records (shielded from cancellation)."""
        tasks = [t for t in (self._ticker, self._writer) if t is not None]
        self._ticker = self._writer = None
        async with self._lock:  # never in the middle of a write
            for task in tasks:
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await asyncio.shield(self.flush())
        except Exception as exc:
            logger.warning("could not write the batch ledger %s: %s", self.path, exc)
        if self._log is not None:
            await asyncio.shield(self._log.close())

    def credentials_reference(self) -> dict[str, Any] | None:
        """The recorded credentials reference, if any."""
        return self.credentials if isinstance(self.credentials, dict) else None
