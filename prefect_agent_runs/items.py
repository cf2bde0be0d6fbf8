"""Batch items as text: JSON Lines or CSV, from a file, stdin or any stream of lines.

Used by ``prefect-agent-runs run`` and by the batch flows' item sources
(:mod:`prefect_agent_runs.flows.sources`). :func:`iter_items` streams: it holds one item
at a time (and the keys seen so far, to refuse duplicates).

An item is one :class:`~prefect_agent_runs.models.RunRequest`: a JSON object per line with
``key``, ``message`` and/or ``input``, and optionally ``thread_id``, ``metadata``,
``assistant_id``, ``instructions`` and ``options``; or a CSV file whose header names the
same columns (the ``input``, ``metadata`` and ``options`` cells hold JSON objects; an empty
cell means "not given"). Any invalid item raises :class:`ItemError` naming its line.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TextIO

import pydantic

from prefect_agent_runs.models import RunRequest

__all__ = [
    "FIELDS",
    "ItemError",
    "ItemFormat",
    "detect_format",
    "iter_items",
    "parse_items",
    "read_items",
]

ItemFormat = Literal["jsonl", "csv"]
"""The item file formats: JSON Lines or CSV."""

FIELDS = (
    "key",
    "message",
    "input",
    "thread_id",
    "metadata",
    "assistant_id",
    "instructions",
    "options",
)
"""The fields an item may have (JSON keys, CSV columns)."""

_JSON_OBJECT_FIELDS = ("input", "metadata", "options")
_STRING_FIELDS = ("key", "message", "thread_id", "assistant_id", "instructions")


class ItemError(ValueError):
    """An item that is not valid, with the line it is on (1-based).

    Attributes:
        line: The line number in the input (the CSV header is line 1).
        source: The file name, or ``<stdin>``.
    """

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}, line {line}: {message}")
        self.source = source
        self.line = line


def detect_format(path: str | None, explicit: str | None = None) -> ItemFormat:
    """Choose the item format: the explicit one, else ``csv`` for ``*.csv``, else ``jsonl``.

    Args:
        path: The items file (``None`` or ``-`` for stdin).
        explicit: ``"jsonl"``, ``"csv"`` or ``None``/``"auto"``.

    Returns:
        The format to parse.
    """
    if explicit in ("jsonl", "csv"):
        return explicit  # type: ignore[return-value]
    if path and path != "-" and os.path.splitext(path)[1].lower() == ".csv":
        return "csv"
    return "jsonl"


def read_items(
    path: str | None,
    *,
    fmt: str | None = None,
    default_assistant_id: str | None = None,
    stdin: TextIO | None = None,
) -> list[RunRequest]:
    """Read and validate every item of a file (or of stdin when ``path`` is ``None``/``-``).

    Args:
        path: The items file; ``None`` or ``"-"`` reads ``stdin``.
        fmt: ``"jsonl"``, ``"csv"`` or ``None``/``"auto"`` (see :func:`detect_format`).
        default_assistant_id: The assistant of items that name none.
        stdin: The stream read for ``-`` (default: ``sys.stdin``).

    Returns:
        One request per item, in file order.

    Raises:
        ItemError: An item is invalid (the message names the line).
        OSError: The file cannot be read.
    """
    chosen = detect_format(path, fmt)
    if path is None or path == "-":
        return parse_items(stdin or sys.stdin, chosen, "<stdin>", default_assistant_id)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return parse_items(handle, chosen, path, default_assistant_id)


def parse_items(
    stream: Iterable[str],
    fmt: ItemFormat,
    source: str = "<items>",
    default_assistant_id: str | None = None,
) -> list[RunRequest]:
    """Parse items from lines of text.

    Args:
        stream: The lines (an open file, ``sys.stdin``, a list of strings).
        fmt: ``"jsonl"`` or ``"csv"``.
        source: How to name the input in error messages.
        default_assistant_id: The assistant of items that name none.

    Returns:
        One request per item; keys are unique (items without a key get none, and the
        batch keys them by position).

    Raises:
        ItemError: An item is invalid, or two items share a key.
    """
    return list(iter_items(stream, fmt, source, default_assistant_id))


def iter_items(
    stream: Iterable[str],
    fmt: ItemFormat,
    source: str = "<items>",
    default_assistant_id: str | None = None,
) -> Iterator[RunRequest]:
    """Parse items from lines of text, one at a time.

    Args:
        stream: The lines (an open file, ``sys.stdin``, a list of strings).
        fmt: ``"jsonl"`` or ``"csv"``.
        source: How to name the input in error messages.
        default_assistant_id: The assistant of items that name none.

    Yields:
        One request per item, in order.

    Raises:
        ItemError: An item is invalid, or two items share a key (raised when reached).
    """
    rows = _jsonl_rows(stream, source) if fmt == "jsonl" else _csv_rows(stream, source)
    seen: dict[str, int] = {}
    for line, row in rows:
        request = _to_request(row, source, line, default_assistant_id)
        if request.key is not None:
            if request.key in seen:
                raise ItemError(
                    source,
                    line,
                    f"key {request.key!r} is already used on line {seen[request.key]} "
                    "(keys must be unique within a batch)",
                )
            seen[request.key] = line
        yield request


def _jsonl_rows(stream: Iterable[str], source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ItemError(source, number, f"not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ItemError(source, number, f"expected a JSON object, got {type(value).__name__}")
        yield number, value


def _csv_rows(stream: Iterable[str], source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(stream)
    header = reader.fieldnames
    if not header:
        return
    unknown = [name for name in header if name not in FIELDS]
    if unknown:
        raise ItemError(
            source,
            1,
            f"unknown column(s) {', '.join(repr(n) for n in unknown)}; "
            f"the columns are {', '.join(FIELDS)}",
        )
    for row in reader:
        line = reader.line_num
        if None in row:
            raise ItemError(source, line, f"more cells than the {len(header)} columns")
        item: dict[str, Any] = {}
        for name, cell in row.items():
            if cell is None or cell == "":
                continue
            if name in _JSON_OBJECT_FIELDS:
                try:
                    item[name] = json.loads(cell)
                except json.JSONDecodeError as exc:
                    raise ItemError(
                        source, line, f"column {name!r} is not valid JSON ({exc.msg})"
                    ) from None
            else:
                item[name] = cell
        if item:
            yield line, item


def _to_request(
    row: dict[str, Any], source: str, line: int, default_assistant_id: str | None
) -> RunRequest:
    unknown = [name for name in row if name not in FIELDS]
    if unknown:
        raise ItemError(
            source,
            line,
            f"unknown field(s) {', '.join(repr(n) for n in unknown)}; "
            f"an item has {', '.join(FIELDS)}",
        )
    item = dict(row)
    if isinstance(item.get("key"), int) and not isinstance(item["key"], bool):
        item["key"] = str(item["key"])
    for name in _STRING_FIELDS:
        if name in item and item[name] is not None and not isinstance(item[name], str):
            raise ItemError(source, line, f"{name!r} must be a string")
    for name in _JSON_OBJECT_FIELDS:
        if name in item and item[name] is not None and not isinstance(item[name], dict):
            raise ItemError(source, line, f"{name!r} must be a JSON object")
    if item.get("message") is None and item.get("input") is None:
        raise ItemError(source, line, "an item needs a 'message' or an 'input'")
    if item.get("key") == "":
        raise ItemError(source, line, "'key' must not be empty")
    if not item.get("assistant_id"):
        if not default_assistant_id:
            raise ItemError(
                source, line, "no assistant: give --assistant or an 'assistant_id' per item"
            )
        item["assistant_id"] = default_assistant_id
    try:
        return RunRequest.model_validate(item)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'item'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ItemError(source, line, problems) from None
