"""Read batch items for ``prefect-agent-runs run`` (the parsing lives in
:mod:`prefect_agent_runs.items`, shared with the batch flows' item sources)."""

from __future__ import annotations

from prefect_agent_runs.items import (
    FIELDS,
    ItemError,
    ItemFormat,
    detect_format,
    iter_items,
    parse_items,
    read_items,
)

__all__ = [
    "FIELDS",
    "ItemError",
    "ItemFormat",
    "detect_format",
    "iter_items",
    "parse_items",
    "read_items",
]
