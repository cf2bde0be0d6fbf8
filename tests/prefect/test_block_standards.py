"""The blocks pass Prefect's BlockStandardTestSuite, register, save, load and keep secrets."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

import httpx
import pytest
import respx
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr

from prefect_agent_runs import (
    AgentRunJob,
    AssistantsCredentials,
    LangGraphCredentials,
    ProjectThreadsCredentials,
    WorkflowRunsCredentials,
)
from prefect_agent_runs.errors import NotSupported

BLOCKS: list[type[Block]] = [
    LangGraphCredentials,
    AssistantsCredentials,
    WorkflowRunsCredentials,
    ProjectThreadsCredentials,
    AgentRunJob,
]
SECRET = "sk-test-" + "9" * 24


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
class TestAllBlocksAdhereToStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block: type[Block]) -> type[Block]:
        return block

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        # Replaces the suite's check, which downloads the logo and measures it with PIL:
        # there is no network (and no PIL) here, and a skipped test is not a passed one.
        logo_url = block._logo_url
        assert logo_url is not None, f"{block.__name__} is missing a value for _logo_url"
        parsed = urlparse(str(logo_url))
        assert parsed.scheme == "https" and parsed.netloc


def test_blocks_register_through_the_collections_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="prefect.collections")}
    assert names.get("prefect_agent_runs") == "prefect_agent_runs"

    from prefect.plugins import load_prefect_collections
    from prefect.utilities.dispatch import get_registry_for_type

    loaded = load_prefect_collections()
    assert "prefect_agent_runs" in loaded
    registry = get_registry_for_type(Block)
    assert registry is not None
    for block in BLOCKS:
        assert registry.get(block.get_block_type_slug()) is block


@pytest.mark.parametrize(
    "block",
    [
        LangGraphCredentials(api_key=SECRET),
        AssistantsCredentials(api_key=SECRET),
        WorkflowRunsCredentials(api_key=SECRET),
        ProjectThreadsCredentials(token=SECRET),
        AgentRunJob(credentials=LangGraphCredentials(api_key=SECRET), assistant_id="echo"),
    ],
    ids=lambda b: type(b).__name__,
)
def test_secret_never_in_repr_or_json(block: Block) -> None:
    assert SECRET not in repr(block)
    assert SECRET not in str(block)
    assert SECRET not in block.model_dump_json()
    assert SECRET not in str(block.model_dump())


def test_workflow_and_project_blocks_build_their_clients() -> None:
    # the two backends are built (they used to raise NotSupported from get_client)
    from prefect_agent_runs.backends.project_threads import ProjectThreadsClient
    from prefect_agent_runs.backends.workflow_runs import WorkflowRunsClient
    from prefect_agent_runs.errors import ValidationError

    credentials = WorkflowRunsCredentials(base_url="http://127.0.0.1:1", api_key="x")
    assert isinstance(credentials.get_client(), WorkflowRunsClient)
    project = ProjectThreadsCredentials(token="x", project_id="p1", team_id="t1")
    assert isinstance(project.get_client(), ProjectThreadsClient)
    with pytest.raises(ValidationError, match="project_id"):
        ProjectThreadsCredentials(token="x").get_client()
    assert NotSupported  # still raised by a backend that is not registered


async def test_save_and_load_keep_the_secret_usable(prefect_harness: None) -> None:
    name = f"lg-{uuid.uuid4().hex[:8]}"
    await LangGraphCredentials(base_url="http://127.0.0.1:9", api_key=SECRET).asave(name)
    loaded = await LangGraphCredentials.aload(name)
    assert isinstance(loaded.api_key, SecretStr)
    assert loaded.api_key.get_secret_value() == SECRET
    run_json = {"run_id": "r1", "thread_id": "t1", "assistant_id": "echo", "status": "success"}
    with respx.mock(base_url="http://127.0.0.1:9") as mock:
        route = mock.get("/threads/t1/runs/r1").mock(
            return_value=httpx.Response(200, json=run_json)
        )
        async with loaded.get_client() as client:
            assert SECRET not in repr(client)
            run = await client.get_run("r1", thread_id="t1")  # type: ignore[attr-defined]
    assert run.id == "r1"
    assert route.calls.last.request.headers["x-api-key"] == SECRET


async def test_job_saves_and_loads_its_nested_credentials(prefect_harness: None) -> None:
    name = f"job-{uuid.uuid4().hex[:8]}"
    job = AgentRunJob(
        credentials=AssistantsCredentials(base_url="http://127.0.0.1:9/v1", api_key=SECRET),
        assistant_id="asst_1",
        message="hi",
        timeout_seconds=30,
    )
    await job.asave(name)
    loaded = await AgentRunJob.aload(name)
    assert isinstance(loaded.credentials, AssistantsCredentials)
    assert loaded.credentials.api_key is not None
    assert loaded.credentials.api_key.get_secret_value() == SECRET
    assert loaded.timeout_seconds == 30
    assert loaded.to_request().message == "hi"
    assert SECRET not in repr(loaded)
