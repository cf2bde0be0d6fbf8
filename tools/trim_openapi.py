"""Trim OpenAI's published OpenAPI document to the paths the Assistants backend and emulator use.

Keeps the listed paths, every component schema they reach through ``$ref`` (transitively),
and the extra components named below; writes YAML with a header that records the source.

Usage:
    python tools/trim_openapi.py path/to/openai-openapi.yaml \
        prefect_agent_runs/testing/schemas/openai-openapi.yaml
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import yaml

PATHS = (
    "/assistants",
    "/assistants/{assistant_id}",
    "/threads",
    "/threads/runs",
    "/threads/{thread_id}",
    "/threads/{thread_id}/messages",
    "/threads/{thread_id}/messages/{message_id}",
    "/threads/{thread_id}/runs",
    "/threads/{thread_id}/runs/{run_id}",
    "/threads/{thread_id}/runs/{run_id}/cancel",
    "/threads/{thread_id}/runs/{run_id}/steps",
    "/threads/{thread_id}/runs/{run_id}/steps/{step_id}",
    "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
)
EXTRA_COMPONENTS = ("ErrorResponse", "Error", "AssistantStreamEvent")
SOURCE = "openai/openai-openapi@f85dbe2:openapi.yaml (spec version 2.3.0, commit dated 2026-08-21)"


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            out.add(ref)
        for value in node.values():
            _refs(value, out)
    elif isinstance(node, list):
        for value in node:
            _refs(value, out)


def trim(doc: dict[str, Any]) -> dict[str, Any]:
    """Return the trimmed document."""
    paths = {p: doc["paths"][p] for p in PATHS}
    pending: set[str] = set()
    _refs(paths, pending)
    pending |= {f"#/components/schemas/{name}" for name in EXTRA_COMPONENTS}
    seen: set[str] = set()
    components: dict[str, dict[str, Any]] = {}
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)
        target = doc["components"][kind][name]
        components.setdefault(kind, {})[name] = target
        found: set[str] = set()
        _refs(target, found)
        pending |= found - seen
    for kind in ("securitySchemes",):
        if kind in doc.get("components", {}):
            components[kind] = doc["components"][kind]
    out = {k: doc[k] for k in ("openapi", "info", "servers", "security") if k in doc}
    out["info"] = {**out["info"], "x-trimmed-from": SOURCE}
    out["paths"] = paths
    out["components"] = {k: dict(sorted(v.items())) for k, v in sorted(components.items())}
    return out


def main(argv: list[str]) -> int:
    """Read ``argv[1]``, write the trimmed document to ``argv[2]``."""
    src, dst = Path(argv[1]), Path(argv[2])
    raw = src.read_bytes()
    doc = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    trimmed = trim(doc)
    header = (
        f"# Trimmed copy of OpenAI's published OpenAPI document.\n"
        f"# Source: {SOURCE}\n"
        f"# Original sha256: {hashlib.sha256(raw).hexdigest()}\n"
        f"# Kept: the {len(PATHS)} Assistants v2 paths the backend and emulator use, every\n"
        f"# component they reference, and {', '.join(EXTRA_COMPONENTS)}.\n"
        f"# Regenerate: python tools/trim_openapi.py <openapi.yaml> {argv[2]}\n"
    )
    text = yaml.safe_dump(trimmed, sort_keys=False, allow_unicode=True, width=100)
    dst.write_text(header + text, encoding="utf-8")
    print(
        f"{dst}: {len(trimmed['paths'])} paths, "
        f"{len(trimmed['components'].get('schemas', {}))} schemas, {len(header + text)} bytes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
