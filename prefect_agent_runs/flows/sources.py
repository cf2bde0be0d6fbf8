"""Where a batch's items live: never in the flow run's parameters (DESIGN.md, semantics 0).

Prefect 3.9's server refuses flow-run parameters over 512 KiB, and stores and shows them
per flow run. So the batch flows take their items as an :class:`ItemsSource`, a small
reference (well under 16 KB for any number of items):

* ``ItemsSource(path="s3://bucket/items.jsonl")`` or just the string: a JSON Lines or CSV
  file, local or any URL fsspec opens (``s3://`` where ``s3fs`` is installed). This is what
  a scheduled deployment names in its parameters. The file is read twice, streaming: once
  to check every item and count them (nothing is sent when one is invalid), once to run.
* A Python list or any iterable of :class:`~prefect_agent_runs.models.RunRequest` (or
  dicts): ``run_batch(credentials, requests)`` and calling ``arun_batch`` /
  ``run_batch_sync`` directly with a list work as before. The flow objects are a
  :class:`BatchFlow`, whose ``__call__`` first stores the items once, as JSON Lines, in
  Prefect's default result storage (``prefect-agent-runs/items/<sha256>.jsonl``, content
  addressed: the same items are stored once), and passes the reference instead. While
  that call runs, the flow body takes the items it stored from memory rather than reading
  and parsing the document back (0.25 s of CPU at 10,000 items); a retry or a resume in
  another process reads the document.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import io
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import pydantic
from prefect import Flow
from pydantic import BaseModel, Field

from prefect_agent_runs.backends.base import batch_tags
from prefect_agent_runs.errors import ValidationError
from prefect_agent_runs.flows._embedded import ensure_embedded_server
from prefect_agent_runs.items import ItemError, detect_format, iter_items
from prefect_agent_runs.models import RunRequest

__all__ = ["BatchFlow", "ItemsSource", "astore_items", "iter_tagged", "open_items"]

ITEMS_ROOT = "prefect-agent-runs/items"
READ_CHUNK = 500
"""Lines read from a file per thread hop."""

_HELD: dict[str, tuple[Sequence[RunRequest], int]] = {}
"""The items of the stored documents that a flow call of this process is running with
(path -> the validated requests, and how many calls hold them)."""


class ItemsSource(BaseModel):
    """A reference to a batch's items (a flow parameter of any batch size).

    Attributes:
        path: A JSON Lines or CSV path or URL (fsspec), or with ``storage="result"`` a path
            in Prefect's default result storage.
        format: ``"jsonl"`` or ``"csv"``; None: from the file name (``*.csv`` is CSV).
        storage: ``"fsspec"`` (a path or URL) or ``"result"`` (Prefect's result storage).
        assistant_id: The assistant of items that name none.
        count: The number of items, when known.
        sha256: The digest of the stored document (``storage="result"``).
    """

    path: str
    format: Literal["jsonl", "csv"] | None = None
    storage: Literal["fsspec", "result"] = "fsspec"
    assistant_id: str | None = None
    count: int | None = Field(default=None, ge=0)
    sha256: str | None = None

    def describe(self) -> str:
        """``N items from PATH`` for logs."""
        where = "result storage" if self.storage == "result" else "file"
        n = f"{self.count} items" if self.count is not None else "items"
        return f"{n} from {where} {self.path}"


def _to_request(item: RunRequest | Mapping[str, Any], index: int) -> RunRequest:
    if isinstance(item, RunRequest):
        return item
    try:
        return RunRequest.model_validate(item)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"item {index} is invalid: {exc}") from None


def _encode(items: Iterable[RunRequest | Mapping[str, Any]]) -> tuple[bytes, list[RunRequest]]:
    buffer = io.BytesIO()
    seen: dict[str, int] = {}
    requests: list[RunRequest] = []
    for index, item in enumerate(items):
        request = _to_request(item, index)
        requests.append(request)
        key = request.key if request.key is not None else str(index)
        if key in seen:
            raise ValidationError(
                f"items {seen[key]} and {index} have the same key {key!r}; keys must be "
                "unique within a batch (nothing was sent)"
            )
        seen[key] = index
        line = request.model_dump(mode="json", exclude_defaults=True)
        line["key"] = key
        buffer.write(json.dumps(line, separators=(",", ":")).encode())
        buffer.write(b"\n")
    return buffer.getvalue(), requests


async def astore_items(items: Iterable[RunRequest | Mapping[str, Any]]) -> ItemsSource:
    """Store items once in Prefect's default result storage; return the reference.

    Args:
        items: Requests or dicts of their fields; unkeyed items are keyed by position.

    Returns:
        An :class:`ItemsSource` (``storage="result"``) to pass as the flow's ``requests``.

    Raises:
        ValidationError: An item is invalid, or two share a key (nothing was stored).
    """
    source, _ = await _store(items)
    return source


async def _store(
    items: Iterable[RunRequest | Mapping[str, Any]],
) -> tuple[ItemsSource, list[RunRequest]]:
    from prefect.results import aget_default_result_storage

    data, requests = _encode(items)
    digest = hashlib.sha256(data).hexdigest()
    path = f"{ITEMS_ROOT}/{digest[:32]}.jsonl"
    ensure_embedded_server()  # else a slow start is swallowed here, and a server leaked
    storage = await aget_default_result_storage()
    writer = getattr(storage, "awrite_path", None) or storage.write_path
    written = writer(path, data)
    if inspect.isawaitable(written):
        await written
    source = ItemsSource(
        path=path, storage="result", format="jsonl", count=len(requests), sha256=digest
    )
    return source, requests


@contextlib.contextmanager
def _held(source: ItemsSource, requests: Sequence[RunRequest]) -> Iterator[None]:
    """While the block runs, :func:`open_items` serves ``source`` from ``requests``."""
    _, holders = _HELD.get(source.path, (requests, 0))
    _HELD[source.path] = (requests, holders + 1)
    try:
        yield
    finally:
        requests, holders = _HELD.pop(source.path)
        if holders > 1:
            _HELD[source.path] = (requests, holders - 1)


def store_items(items: Iterable[RunRequest | Mapping[str, Any]]) -> ItemsSource:
    """The sync twin of :func:`astore_items` (for sync callers outside an event loop)."""
    return _store_sync(items)[0]


def _store_sync(
    items: Iterable[RunRequest | Mapping[str, Any]],
) -> tuple[ItemsSource, list[RunRequest]]:
    from prefect.utilities.asyncutils import run_coro_as_sync

    stored = run_coro_as_sync(_store(items))
    assert stored is not None
    return stored


def as_source(requests: Any) -> ItemsSource | None:
    """The reference ``requests`` already is (a source or a path), else None."""
    if isinstance(requests, ItemsSource):
        return requests
    if isinstance(requests, str):
        return ItemsSource(path=requests)
    if isinstance(requests, Mapping) and "path" in requests and "assistant_id" not in requests:
        return ItemsSource.model_validate(dict(requests))
    return None


async def _lines_in_chunks(path: str) -> AsyncIterator[list[str]]:
    import fsspec  # type: ignore[import-untyped]

    def open_file() -> Any:
        return fsspec.open(path, "rt", encoding="utf-8-sig", newline="").open()

    handle = await asyncio.to_thread(open_file)
    try:
        while True:
            chunk = await asyncio.to_thread(handle.readlines, READ_CHUNK * 200)
            if not chunk:
                return
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def _result_lines(path: str) -> AsyncIterator[list[str]]:
    from prefect.results import aget_default_result_storage

    storage = await aget_default_result_storage()
    reader = getattr(storage, "aread_path", None) or storage.read_path
    data = reader(path)
    if inspect.isawaitable(data):
        data = await data
    text = data.decode() if isinstance(data, bytes) else str(data)
    lines = text.splitlines(keepends=True)
    for start in range(0, len(lines), READ_CHUNK):
        yield lines[start : start + READ_CHUNK]


async def _stream(source: ItemsSource) -> AsyncIterator[RunRequest]:
    held = _HELD.get(source.path) if source.storage == "result" else None
    if held is not None:  # stored by the flow call running now, in this process
        for request in held[0]:
            yield request
        return
    fmt = source.format or detect_format(source.path)
    chunks = (
        _result_lines(source.path) if source.storage == "result" else _lines_in_chunks(source.path)
    )
    if fmt == "csv":
        # a CSV row may span lines: parse the whole stream with one reader
        lines: list[str] = []
        async for chunk in chunks:
            lines += chunk
        for request in iter_items(lines, "csv", source.path, source.assistant_id):
            yield request
        return
    number = 0
    seen: set[str] = set()
    async for chunk in chunks:
        for request in _parse_jsonl(chunk, source, number, seen):
            yield request
        number += len(chunk)


def _parse_jsonl(
    chunk: list[str], source: ItemsSource, first: int, seen: set[str]
) -> Iterator[RunRequest]:
    for offset, text in enumerate(chunk, start=1):
        if not text.strip():
            continue
        line = first + offset
        try:
            (request,) = iter_items([text], "jsonl", source.path, source.assistant_id)
        except ItemError as exc:
            raise ItemError(source.path, line, str(exc).split(": ", 2)[-1]) from None
        if request.key is not None:
            if request.key in seen:
                raise ItemError(source.path, line, f"key {request.key!r} is used twice")
            seen.add(request.key)
        yield request


async def check_source(source: ItemsSource) -> int:
    """Read every item once (nothing kept); the number of items.

    Raises:
        ValidationError: An item is invalid or a key repeats (names the line).
    """
    count = 0
    try:
        async for _ in _stream(source):
            count += 1
    except ItemError as exc:
        raise ValidationError(f"items {source.path}: {exc}") from None
    return count


async def open_items(source: ItemsSource) -> AsyncIterator[RunRequest]:
    """Stream the items of a source, in order.

    Raises:
        ValidationError: An item is invalid (run :func:`check_source` first to refuse a
            bad file before anything is sent).
    """
    try:
        async for request in _stream(source):
            yield request
    except ItemError as exc:
        raise ValidationError(f"items {source.path}: {exc}") from None


async def iter_tagged(
    requests: AsyncIterator[RunRequest], batch_key: str, flow_run_id: str | None
) -> AsyncIterator[RunRequest]:
    """Key (by position when unkeyed) and tag each item with the batch (semantics 1)."""
    index = 0
    async for request in requests:
        key = request.key if request.key is not None else str(index)
        index += 1
        yield request.model_copy(update={"key": key}).with_metadata(
            batch_tags(batch_key, key, flow_run_id)
        )


class BatchFlow(Flow[Any, Any]):
    """A Prefect flow whose ``requests`` parameter is stored, not sent, when it is a list.

    Calling the flow with a list (or any iterable) of requests stores them once in the
    result storage (:func:`astore_items`) and runs the flow with the :class:`ItemsSource`,
    so the flow run's parameters stay small for any number of items.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        names = list(inspect.signature(self.fn).parameters)
        position = names.index("requests")
        if "requests" in kwargs:
            items = kwargs["requests"]
        elif len(args) > position:
            items = args[position]
        else:
            return super().__call__(*args, **kwargs)
        if as_source(items) is not None or not isinstance(items, Iterable):
            return super().__call__(*args, **kwargs)

        def with_source(source: ItemsSource) -> tuple[tuple[Any, ...], dict[str, Any]]:
            if "requests" in kwargs:
                return args, {**kwargs, "requests": source}
            return (*args[:position], source, *args[position + 1 :]), kwargs

        if self.isasync:

            async def call() -> Any:
                source, requests = await _store(items)
                new_args, new_kwargs = with_source(source)
                with _held(source, requests):
                    return await Flow.__call__(self, *new_args, **new_kwargs)

            return call()
        source, requests = _store_sync(items)
        new_args, new_kwargs = with_source(source)
        with _held(source, requests):
            return super().__call__(*new_args, **new_kwargs)
