"""An AgentRunJob keeps its backend (issue 13): a job holding AssistantsCredentials used to
load back as LangGraphCredentials and send the Assistants key over the LangGraph protocol."""

from __future__ import annotations

import uuid

import pytest

from prefect_agent_runs import AssistantsCredentials, LangGraphCredentials
from prefect_agent_runs.blocks.job import AgentRunJob

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.mark.parametrize("saved_credentials", [True, False], ids=["saved", "inline"])
@pytest.mark.parametrize("backend", ["assistants", "langgraph"])
async def test_a_saved_job_loads_back_with_its_own_credentials_class(
    backend: str, saved_credentials: bool
) -> None:
    credentials: AssistantsCredentials | LangGraphCredentials = (
        AssistantsCredentials(base_url="http://127.0.0.1:9/v1", api_key="sk-job-test")
        if backend == "assistants"
        else LangGraphCredentials(base_url="http://127.0.0.1:9", api_key="lg-job-test")
    )
    name = f"job-{uuid.uuid4().hex[:8]}"
    if saved_credentials:
        await credentials.save(f"creds-{name}")
    job = AgentRunJob(credentials=credentials, assistant_id="asst_1", message="hi")
    await job.save(name)
    loaded = await AgentRunJob.load(name)
    assert type(loaded.credentials) is type(credentials)
    assert loaded.credentials.base_url == credentials.base_url
    assert loaded.credentials.api_key.get_secret_value() == credentials.api_key.get_secret_value()
    client = loaded.credentials.get_client()
    assert client.backend == credentials.backend
    await client.aclose()
