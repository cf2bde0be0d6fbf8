"""The API schemas ship in the package, and nothing in the tests or the package reads ../shared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prefect_agent_runs.testing import schemas
from prefect_agent_runs.testing.openapi_contract import OpenApiContract, load_openapi

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("path", "version"),
    [
        (schemas.OPENAI_OPENAPI, "2.3.0"),
        (schemas.LINKAGE_OPENAPI, "0.1.0"),
        (schemas.PROJECT_THREADS_SWAGGER, "v1"),
    ],
)
def test_schemas_load_from_the_package(path: Path, version: str) -> None:
    doc = load_openapi(path)
    assert doc["info"]["version"] == version
    assert path.parent == schemas.SCHEMAS_DIR
    assert schemas.schema_path(path.name) == path


def test_trimmed_openai_document_keeps_its_source_and_every_reference() -> None:
    text = schemas.OPENAI_OPENAPI.read_text(encoding="utf-8")
    assert "openai/openai-openapi@f85dbe2" in text.splitlines()[1]
    contract = OpenApiContract(schemas.OPENAI_OPENAPI)
    assert len(contract.document["paths"]) == 13
    # every $ref resolves inside the trimmed document
    refs = set(re.findall(r"\$ref: '?#/components/schemas/([A-Za-z0-9_.]+)", text))
    assert refs <= set(contract.document["components"]["schemas"])
    for name in ("ErrorResponse", "AssistantStreamEvent", "RunObject", "CreateRunRequest"):
        contract.component_pointer(name)


def test_unknown_schema_is_refused() -> None:
    with pytest.raises(FileNotFoundError):
        schemas.schema_path("__init__.py")


def test_nothing_reads_the_shared_folder() -> None:
    pattern = re.compile(r"""["'/]shared[/"']|\.\./shared|shared/reference""")
    offenders = []
    for folder in ("tests", "prefect_agent_runs"):
        for file in (REPO / folder).rglob("*.py"):
            if file == Path(__file__).resolve():
                continue
            for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{file.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []
