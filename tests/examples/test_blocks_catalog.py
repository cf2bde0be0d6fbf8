"""What the Prefect blocks catalog shows: readable titles, secrets first, one logo per block
(shipped in the package), no block type for a backend that is not built, and never the
abstract ``AgentRunsCredentials`` (checked on a real ``prefect server start``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prefect.blocks.core import Block, InvalidBlockRegistration
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

import prefect_agent_runs
from prefect_agent_runs import (
    AgentRunJob,
    AssistantsCredentials,
    LangGraphCredentials,
    ProjectThreadsCredentials,
    WorkflowRunsCredentials,
)
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials, credentials_classes
from prefect_agent_runs.testing._process import run
from prefect_agent_runs.testing.prefect_server import PrefectServer

LOGOS = Path(prefect_agent_runs.__file__).parent / "blocks" / "logos"
BLOCKS = [LangGraphCredentials, AssistantsCredentials]
SECRET_FIRST = {
    "LangGraphCredentials": "api_key",
    "AssistantsCredentials": "api_key",
    "WorkflowRunsCredentials": "api_key",
    "ProjectThreadsCredentials": "token",
}


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
def test_titles_read_well_and_the_secret_comes_first(block: type[AgentRunsCredentials]) -> None:
    schema = block.model_json_schema()
    properties = schema["properties"]
    assert list(properties)[:2] == ["api_key", "base_url"]
    assert properties["api_key"]["title"] == "API key"
    assert properties["base_url"]["title"] == "Base URL"
    assert "api_key" in schema["secret_fields"]
    assert properties["global_concurrency_limit"]["title"] == "Global concurrency limit"


def test_every_block_has_its_own_logo_shipped_in_the_package() -> None:
    urls = {}
    for block in [*BLOCKS, AgentRunJob]:
        url = str(block._logo_url)
        name = url.rsplit("/", 1)[-1]
        assert (LOGOS / name).is_file(), url
        assert (LOGOS / name).read_text().lstrip().startswith("<svg")
        urls[block.__name__] = url
    assert len(set(urls.values())) == len(urls), urls


def test_a_block_whose_backend_is_not_built_is_not_registered() -> None:
    class NotBuiltCredentials(AgentRunsCredentials):
        """A backend that no package registers."""

        _block_type_name: ClassVar[str | None] = "Not Built Credentials"
        backend: ClassVar[str] = "not_built_backend"

    with pytest.raises(InvalidBlockRegistration, match="not_built_backend backend is not built"):
        NotBuiltCredentials.register_type_and_schema()


def test_the_shared_base_is_no_block_type() -> None:
    with pytest.raises(InvalidBlockRegistration):
        AgentRunsCredentials.register_type_and_schema()
    assert AgentRunsCredentials not in credentials_classes()
    for block in [*BLOCKS, WorkflowRunsCredentials, ProjectThreadsCredentials]:
        assert block in credentials_classes()


def test_the_job_offers_each_concrete_credentials_block() -> None:
    schema = AgentRunJob.model_json_schema()
    field = schema["properties"]["credentials"]
    offered = [ref["$ref"].rsplit("/", 1)[-1] for ref in field["anyOf"]]
    assert offered == [block.__name__ for block in credentials_classes()]
    assert "AgentRunsCredentials" not in schema["definitions"]
    slugs = [ref["block_type_slug"] for ref in schema["block_schema_references"]["credentials"]]
    assert slugs == [block.get_block_type_slug() for block in credentials_classes()]
    assert "agentrunscredentials" not in slugs
    assert {"credentials.api_key", "credentials.token"} <= set(schema["secret_fields"])


PACKAGE_BACKENDS = ("langgraph", "openai_assistants", "workflow_runs", "project_threads")


async def _catalog(server: PrefectServer) -> dict[str, Any]:
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        async with get_client() as client:
            types = await client.read_block_types()
            ours = {
                t.slug: t
                for t in types
                if t.documentation_url and "prefect-agent-runs" in str(t.documentation_url)
            }
            schemas = {
                slug: (await client.get_most_recent_block_schema_for_block_type(t.id))
                for slug, t in ours.items()
            }
            return {"types": types, "ours": ours, "schemas": schemas}


async def test_the_catalog_of_a_real_server_lists_only_concrete_working_blocks(
    prefect_server: PrefectServer,
) -> None:
    """`prefect block register -m prefect_agent_runs` on a real server, as a user does, then
    the catalog read back through the API: no abstract block, titles and order as shown."""
    # the package's own blocks: `prefect block register` runs in a fresh interpreter, which
    # does not know the backend that tests/skeleton registers in this process
    package_blocks = [b for b in credentials_classes() if b.backend in PACKAGE_BACKENDS]
    assert len(package_blocks) == len(PACKAGE_BACKENDS)
    register = await asyncio.to_thread(
        run,
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_agent_runs"],
        env=prefect_server.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert register.returncode == 0, register.stderr
    printed = " ".join(register.stdout.split())  # Prefect's table of the registered blocks
    for block in [AgentRunJob, *package_blocks]:
        assert block.get_block_type_name() in printed, register.stdout
    assert "Agent Runs Credentials" not in printed and "AgentRunsCredentials" not in printed
    catalog = await _catalog(prefect_server)
    assert "agentrunscredentials" not in {t.slug for t in catalog["types"]}
    expected = {b.get_block_type_slug(): b for b in [AgentRunJob, *package_blocks]}
    assert set(catalog["ours"]) == set(expected)
    for slug, block_schema in catalog["schemas"].items():
        block = expected[slug]
        assert block_schema is not None, slug
        properties = block_schema.fields["properties"]
        if block is AgentRunJob:
            offered = [r["$ref"].rsplit("/", 1)[-1] for r in properties["credentials"]["anyOf"]]
            assert offered == [b.__name__ for b in package_blocks]
            continue
        assert list(properties)[:2] == [SECRET_FIRST[block.__name__], "base_url"], slug
        assert properties["base_url"]["title"] == "Base URL"
        if "api_key" in properties:
            assert properties["api_key"]["title"] == "API key"
        # a working block: the catalog's block type loads as its class and builds a client
        loaded = Block.get_block_class_from_key(slug)
        assert loaded is block
        required = {"project_id": "p1"} if "project_id" in properties else {}
        client = loaded(base_url="http://127.0.0.1:9", **required).get_client()
        await client.aclose()
