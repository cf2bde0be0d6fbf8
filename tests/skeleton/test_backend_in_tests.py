"""A backend defined only here, on the shared parts, that the core accepts unchanged.

``tiny`` is a few dozen lines: a client over a tiny Starlette app, its credentials as a
plain pydantic model, one ``register`` call. ``run_batch``, the CLI and ``AgentRunJob``
take it with no change to any core file (the block is built from the settings).
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, Field, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from prefect_agent_runs import AgentRunJob, RunRequest, RunStatus
from prefect_agent_runs.backends import registry
from prefect_agent_runs.backends.base import BaseRunsClient, Capability, Page, paged
from prefect_agent_runs.backends.create import CREATE_ID_KEY, first_match, new_create_id
from prefect_agent_runs.backends.paging import OffsetPager
from prefect_agent_runs.backends.steps import hint_seconds, poll_step
from prefect_agent_runs.blocks import credentials_class
from prefect_agent_runs.cli import main
from prefect_agent_runs.errors import NotSupported, ValidationError
from prefect_agent_runs.http import Transport
from prefect_agent_runs.models import Run, ThreadResult
from prefect_agent_runs.testing._serve import ServedApp
from prefect_agent_runs.waiting import Observation

# -- the backend: client, settings, registration ------------------------------------------


class TinyClient(BaseRunsClient):
    backend: ClassVar[str] = "tiny"
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.CANCEL, Capability.LIST_RUNS})
    status_map: ClassVar[dict[str, RunStatus]] = {
        "waiting": RunStatus.QUEUED,
        "busy": RunStatus.RUNNING,
        "done": RunStatus.COMPLETED,
        "stopped": RunStatus.CANCELLED,
    }

    def __init__(self, base_url: str, *, api_key: str | None = None, **options: Any) -> None:
        super().__init__(
            Transport(
                backend=self.backend,
                base_url=base_url,
                headers={"x-key": api_key or ""},
                secrets=[api_key or ""],
                **{k: v for k, v in options.items() if k != "policy"},
            ),
            policy=options.get("policy"),
        )

    def to_run(self, raw: Any) -> Run:
        return Run(
            id=raw["id"],
            thread_id=raw["id"],
            status=self.normalize(raw["status"]),
            raw_status=raw["status"],
            backend=self.backend,
            metadata=raw["metadata"],
            raw=raw,
        )

    async def create_run(self, request: RunRequest) -> Run:
        create_id = new_create_id()
        payload = {
            "message": request.message,
            "metadata": {**request.metadata, CREATE_ID_KEY: create_id},
        }
        return await self.create_reconciled_run(
            "/runs",
            payload,
            action=self.create_action(request, None),
            lookup=lambda: first_match(self.list_runs(), {CREATE_ID_KEY: create_id}),
        )

    async def get_run(self, run_id: str, *, thread_id: str | None = None) -> Run:
        path = f"/runs/{self.segment(run_id, 'run_id')}"
        return self.to_run(await self.transport.request_json("GET", path, action=f"get {run_id}"))

    @paged
    async def list_runs(
        self, *, thread_id: str | None = None, limit: int = 20, **filters: Any
    ) -> Page[Run]:
        async def fetch(offset: int, size: int) -> list[Run]:
            params = {"offset": offset, "limit": size}
            body = await self.transport.request_json("GET", "/runs", action="list", params=params)
            return [self.to_run(raw) for raw in body]

        return await OffsetPager(fetch, limit=limit).first()

    async def cancel_run(
        self, run_id: str, *, thread_id: str | None = None, wait: bool = False
    ) -> Run:
        path = f"/runs/{self.segment(run_id, 'run_id')}/cancel"
        return self.to_run(await self.transport.request_json("POST", path, action="cancel"))

    async def wait_for_run(self, run: Run | str, **options: Any) -> Run:
        current = run if isinstance(run, Run) else await self.get_run(run)
        path = f"/runs/{self.segment(current.id, 'run_id')}"

        async def read() -> Observation:
            response = await self.transport.request("GET", path, action=f"poll {current.id}")
            hint = hint_seconds(response, "x-poll-after-ms")
            return Observation(self.to_run(response.json()), poll_after_seconds=hint)

        policy = self._policy(options.get("policy"), options.get("timeout_seconds"), None)
        return await self._wait(poll_step(read), current, policy=policy, on_change=None)

    async def get_result(self, run: Run) -> ThreadResult:
        path = f"/runs/{self.segment(run.id, 'run_id')}/output"
        body = await self.transport.request_json("GET", path, action="out")
        return ThreadResult(thread_id=run.id, run_id=run.id, text=body["text"])


class TinySettings(BaseModel):
    """Credentials of the tiny test backend.

    Examples:
        ```python
        credentials = TinyCredentials(base_url="http://127.0.0.1:9", api_key="k")
        ```
    """

    base_url: str = Field(default="http://127.0.0.1:9", description="The tiny API root.")
    api_key: SecretStr | None = Field(default=None, description="Sent as `x-key`.")


SPEC = registry.BackendSpec(
    name="tiny",
    client=TinyClient,
    credentials_block="TinyCredentials",
    block_type_name="Tiny Credentials",
    settings=TinySettings,
    description="A backend defined in the tests.",
)
registry.register(SPEC)

# -- its server: polls move a run waiting -> busy -> done -----------------------------------


class TinyServer(ServedApp):
    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, dict[str, Any]] = {}
        self.creates = 0
        self.ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/runs", self.create, methods=["POST"]),
                Route("/runs", self.list, methods=["GET"]),
                Route("/runs/{run_id}", self.get, methods=["GET"]),
                Route("/runs/{run_id}/cancel", self.cancel, methods=["POST"]),
                Route("/runs/{run_id}/output", self.output, methods=["GET"]),
            ]
        )

    async def create(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.creates += 1
        run = {"id": f"r{next(self.ids)}", "status": "waiting", **body}
        self.runs[run["id"]] = run
        return JSONResponse({k: v for k, v in run.items() if k != "message"})

    def _public(self, run: dict[str, Any]) -> JSONResponse:
        body = {k: v for k, v in run.items() if k != "message"}
        return JSONResponse(body, headers={"x-poll-after-ms": "5"})

    async def get(self, request: Request) -> JSONResponse:
        run = self.runs.get(request.path_params["run_id"])
        if run is None:
            return JSONResponse({"message": "no such run"}, status_code=404)
        run["status"] = {"waiting": "busy", "busy": "done"}.get(run["status"], run["status"])
        return self._public(run)

    async def list(self, request: Request) -> JSONResponse:
        offset, limit = int(request.query_params["offset"]), int(request.query_params["limit"])
        runs = list(reversed(self.runs.values()))[offset : offset + limit]
        return JSONResponse([{k: v for k, v in r.items() if k != "message"} for r in runs])

    async def cancel(self, request: Request) -> JSONResponse:
        run = self.runs[request.path_params["run_id"]]
        run["status"] = "stopped" if run["status"] != "done" else "done"
        return self._public(run)

    async def output(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {"text": "echo: " + self.runs[request.path_params["run_id"]]["message"]}
        )


@pytest.fixture(scope="module")
def server() -> Iterator[TinyServer]:
    with TinyServer() as served:
        yield served


# -- what the core does with it -------------------------------------------------------------


def test_the_registry_and_the_block_layer_know_it(server: TinyServer) -> None:
    assert "tiny" in registry.names()
    assert registry.get("tiny").has(Capability.CANCEL)
    assert not registry.get("tiny").has(Capability.JOIN)
    block = credentials_class("tiny")
    assert block.__name__ == "TinyCredentials" and block.backend == "tiny"
    assert credentials_class("tiny") is block
    client = block(base_url=server.url, api_key="secret-key").get_client()
    assert isinstance(client, TinyClient)
    with pytest.raises(ValidationError, match=r"tiny: run_id '\.\.' is not a valid id"):
        client.segment("..", "run_id")
    with pytest.raises(NotSupported, match="tiny: join"):
        raise client._unsupported("join")


async def test_run_batch_accepts_it(prefect_harness: None, server: TinyServer) -> None:
    from prefect_agent_runs.flows import run_batch

    credentials = credentials_class("tiny")(base_url=server.url, api_key="secret-key")
    items = [RunRequest(assistant_id="a", key=f"k{i}", message=f"q{i}") for i in range(12)]
    result = await run_batch(credentials, items, batch_key=f"tiny-{uuid.uuid4().hex[:8]}")
    assert [o.key for o in result.completed] == [f"k{i}" for i in range(12)]
    for i, outcome in enumerate(result.outcomes):
        assert outcome.result is not None and outcome.result.text == f"echo: q{i}"


def test_the_cli_accepts_it(
    prefect_harness: None, server: TinyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(json.dumps({"key": f"c{i}", "message": f"m{i}"}) + "\n" for i in range(3))
    )
    argv = ["run", str(items), "--backend", "tiny", "--url", server.url, "--assistant", "a"]
    assert main([*argv, "--no-progress"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["key"] for r in records] == ["c0", "c1", "c2"]
    assert main([*argv, "--api-version", "2024-05-01-preview"]) == 2
    assert "--api-version is for --backend openai_assistants only" in capsys.readouterr().err


async def test_agent_run_job_accepts_it(prefect_harness: None, server: TinyServer) -> None:
    credentials = credentials_class("tiny")(base_url=server.url, api_key="secret-key")
    job = AgentRunJob(credentials=credentials, assistant_id="a", message="hello")
    agent_run = await job.atrigger()
    run = await agent_run.await_for_completion()
    assert run.status is RunStatus.COMPLETED
    assert (await agent_run.afetch_result()).text == "echo: hello"
    name = f"tiny-job-{uuid.uuid4().hex[:8]}"
    await job.asave(name)
    loaded = await AgentRunJob.aload(name)
    assert type(loaded.credentials).__name__ == "TinyCredentials"
    assert (await loaded.credentials.get_client().get_run(run.id)).status is RunStatus.COMPLETED
