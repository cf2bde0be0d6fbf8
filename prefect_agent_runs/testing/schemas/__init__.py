"""The platforms' published API schemas, shipped with the package.

The emulators in :mod:`prefect_agent_runs.testing` are checked against these documents
(both ways: what a client sends and what the emulator answers), and users' own tests can
check against them too:

Example:
    ```python
    from prefect_agent_runs.testing.openapi_contract import OpenApiContract
    from prefect_agent_runs.testing.schemas import LINKAGE_OPENAPI

    contract = OpenApiContract(LINKAGE_OPENAPI)
    ```

Sources and versions are recorded in ``README.md`` beside the files (and, for the trimmed
OpenAI document, in its header).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "LINKAGE_OPENAPI",
    "OPENAI_OPENAPI",
    "PROJECT_THREADS_SWAGGER",
    "SCHEMAS_DIR",
    "schema_path",
]

SCHEMAS_DIR = Path(__file__).resolve().parent
"""The folder that holds the documents."""

OPENAI_OPENAPI = SCHEMAS_DIR / "openai-openapi.yaml"
"""OpenAI's OpenAPI document (2.3.0), trimmed to the Assistants v2 paths we use."""

LINKAGE_OPENAPI = SCHEMAS_DIR / "linkage-openapi.yaml"
"""The Linkage SDK's generated OpenAPI document (workflow runs and their events)."""

PROJECT_THREADS_SWAGGER = SCHEMAS_DIR / "project-threads-swagger.json"
"""The project thread-runs backend's swagger (AgileMantis API v1)."""


def schema_path(name: str) -> Path:
    """The path of a shipped schema document.

    Args:
        name: The file name, e.g. ``"linkage-openapi.yaml"``.

    Returns:
        The absolute path.

    Raises:
        FileNotFoundError: If no such document ships with the package.
    """
    path = SCHEMAS_DIR / name
    if not path.is_file() or path.suffix not in (".yaml", ".json"):
        raise FileNotFoundError(f"no schema {name!r} in {SCHEMAS_DIR}")
    return path
