"""What the Prefect blocks catalog shows: readable titles, secrets first, one logo per block
(shipped in the package), and no block type for a backend that is not built."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from prefect.blocks.core import InvalidBlockRegistration

import prefect_agent_runs
from prefect_agent_runs import AgentRunJob, AssistantsCredentials, LangGraphCredentials
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials

LOGOS = Path(prefect_agent_runs.__file__).parent / "blocks" / "logos"
BLOCKS = [LangGraphCredentials, AssistantsCredentials]


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
