"""Canary secrets (issue 13, item 6): a distinctive key and a distinctive token go through
every failing scenario, and are then searched for everywhere they could leak.

The server here echoes the request headers back in its answers, as some servers and
proxies do, so the key is in every answer: 401s, 500s with a body, 502 pages, and 200s of
the wrong shape. Scenarios, on all four backends: one-off client calls, ``run_batch`` with
an unsaved block (key inline, and key also in an environment variable), with a saved block,
with ``fail_on="any"`` (the flow run fails), ``AgentRunJob`` (unsaved and saved), and the CLI
(``--api-key-env`` and ``--block``) in subprocesses with their own PREFECT_HOME.

Places scanned: every log record (a handler at DEBUG on the root logger and on each
non-propagating logger: ours, Prefect's, with tracebacks), exception texts, reprs and
``__dict__`` along the cause chain, outcomes and ``to_records()``, the Prefect API's logs,
artifacts, flow-run and task-run state messages and flow-run parameters, CLI stdout,
stderr and results files, the emulator's recorded requests, and every file under
PREFECT_HOME (ours and the CLI's), the local result storage and the Prefect database.

A hit is the whole secret or any 10-character piece of its random part (a snippet cut
before redaction would leave a piece).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from prefect_agent_runs import (
    AgentRunJob,
    AssistantsCredentials,
    LangGraphCredentials,
    ProjectThreadsCredentials,
    RunRequest,
    WorkflowRunsCredentials,
)
from prefect_agent_runs.blocks.credentials import AgentRunsCredentials
from prefect_agent_runs.errors import AgentRunsError
from prefect_agent_runs.flows import run_batch
from prefect_agent_runs.models import Run, RunStatus
from prefect_agent_runs.testing import (
    AssistantsEmulator,
    ProjectThreadsEmulator,
    WorkflowRunsEmulator,
)
from prefect_agent_runs.testing._process import end_group, spawn
from prefect_agent_runs.testing._serve import ServedApp

KEY_RANDOM = "5e1f0c8a7b3d4e29a6c1f7d2"
CANARY_KEY = f"sk-canary-{KEY_RANDOM}"
"""The canary API key (LangGraph, Assistants, workflow runs); no other text contains it."""
TOKEN_RANDOM = "9b4d2e7a1c6f3e8d5a0b2c4e"
CANARY_TOKEN = f"eyJhbGciOiJIUzI1NiJ9.canary{TOKEN_RANDOM}.sig"
"""The canary JWT (project threads)."""
NEEDLES = [CANARY_KEY.encode(), CANARY_TOKEN.encode()] + [
    part[i : i + 10].encode() for part in (KEY_RANDOM, TOKEN_RANDOM) for i in range(len(part) - 9)
]
PROJECT = "p-canary"
MODES = ("m401", "m500", "mshape", "mmixed")
"""How the echo server answers, chosen by the first path segment of base_url."""


class EchoServer(ServedApp):
    """Answers every request with its headers, in the way its mode says.

    ``m401``: 401 with the headers in the error message; ``m500``: 500 with them as a JSON
    body; ``mshape``: 200 with them (not a run, not a thread, not a list); ``mmixed``: GET a
    502 page with them as text, POST 200 of the wrong shape, searches 500.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hits = 0

        async def echo(request: Request) -> Response:
            self.hits += 1
            mode = request.path_params["mode"]
            headers = dict(request.headers)
            text = f"request headers were {headers}"
            if mode == "m401":
                return JSONResponse(
                    {"error": {"message": text}, "message": text, "detail": text}, status_code=401
                )
            if mode == "m500":
                return JSONResponse({"error": {"message": text}, "details": text}, status_code=500)
            if mode == "mshape":
                return JSONResponse({"echo": headers, "id": 7, "runId": None})
            if request.method == "GET":
                return PlainTextResponse(f"upstream said: {headers}", status_code=502)
            if request.url.path.endswith("/search"):
                return JSONResponse({"echo": headers}, status_code=500)
            return JSONResponse({"echo": headers, "id": 7, "run_id": None})

        self.app = Starlette(
            routes=[Route("/{mode}/{path:path}", echo, methods=["GET", "POST", "DELETE"])]
        )


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


class Scan:
    """Where the canaries were looked for, and where they were found (files: those written
    since the scan began; PREFECT_HOME is the user's, and an earlier session's files are
    not this run's doing. The database is scanned whole)."""

    def __init__(self) -> None:
        self.since = time.time() - 1
        self.places = 0
        self.hits: list[str] = []
        self.by_kind: dict[str, int] = {}

    def text(self, where: str, text: str | bytes | None) -> None:
        if text is None:
            return
        self.places += 1
        kind = where.split(" ", 1)[0]
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        raw = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
        if any(needle in raw for needle in NEEDLES):
            self.hits.append(where)

    def exception(self, where: str, exc: BaseException) -> None:
        seen: set[int] = set()
        current: BaseException | None = exc
        import traceback

        self.text(f"exception {where} traceback", "".join(traceback.format_exception(exc)))
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self.text(f"exception {where} str", str(current))
            self.text(f"exception {where} repr", repr(current))
            self.text(f"exception {where} dict", repr(getattr(current, "__dict__", {})))
            current = current.__cause__ or current.__context__

    def tree(self, root: Path) -> None:
        if not root.exists():
            return
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_mtime >= self.since:
                try:
                    self.text(f"file {path}", path.read_bytes())
                except OSError as exc:
                    self.hits.append(f"unreadable {path}: {exc}")


class Capture(logging.Handler):
    """Every record, once, at DEBUG (attached to root and to each non-propagating logger)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: dict[int, logging.LogRecord] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.records[id(record)] = record


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    names = ["", "prefect", "prefect_agent_runs", "httpx", "httpcore"]
    names += [
        name
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and not lg.propagate
    ]
    saved = []
    for name in names:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level))
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)


@pytest.fixture
def fast_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    """No lookup window and no waits between lookups: ambiguous creates fail fast."""
    from prefect_agent_runs.backends import create

    monkeypatch.setattr(create, "LOOKUP_WINDOW_SECONDS", 0.0)
    monkeypatch.setattr(create, "MAX_BACKOFF_SECONDS", 0.0)


def credentials_for(backend: str, base_url: str) -> AgentRunsCredentials:
    common: dict[str, Any] = {"max_retries": 0, "request_timeout_seconds": 5}
    if backend == "langgraph":
        return LangGraphCredentials(base_url=base_url, api_key=CANARY_KEY, **common)
    if backend == "openai_assistants":
        return AssistantsCredentials(base_url=base_url + "/v1", api_key=CANARY_KEY, **common)
    if backend == "workflow_runs":
        return WorkflowRunsCredentials(
            base_url=base_url, api_key=CANARY_KEY, client_id="client-1", **common
        )
    return ProjectThreadsCredentials(
        base_url=base_url, token=CANARY_TOKEN, project_id=PROJECT, **common
    )


BACKENDS = ("langgraph", "openai_assistants", "workflow_runs", "project_threads")


def items_for(backend: str, n: int = 3) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        item: dict[str, Any] = {"key": f"k{i}", "assistant_id": "a", "message": "hi"}
        if backend == "project_threads":
            item["thread_id"] = f"thread-{i}"
        out.append(item)
    return out


async def _fast_sleep(seconds: float) -> None:
    return None


def _calls(client: Any, backend: str) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    thread = "t1"
    fake = Run(id="r1", thread_id=thread, status=RunStatus.COMPLETED, backend=backend, raw={})
    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("get_run", lambda: client.get_run("r1", thread_id=thread)),
        ("get_result", lambda: client.get_result(fake)),
        (
            "create_run on a thread",
            lambda: client.create_run(
                RunRequest(
                    assistant_id="a",
                    message="hi",
                    thread_id=None if backend == "workflow_runs" else thread,
                    metadata={"prefect_agent_runs_batch": "b", "prefect_agent_runs_key": "k"},
                )
            ),
        ),
    ]
    if backend in ("langgraph", "openai_assistants"):
        calls.append(("cancel_run", lambda: client.cancel_run("r1", thread_id=thread)))
        calls.append(
            ("create_run", lambda: client.create_run(RunRequest(assistant_id="a", message="hi")))
        )
    if backend == "langgraph":
        calls.append(("search_threads", lambda: client.search_threads(metadata={"a": "b"})))
    if backend == "workflow_runs":
        calls.append(("list_runs", lambda: client.list_runs(workflow_id="a").get_all()))
    return calls


async def _direct_calls(scan: Scan, url: str) -> int:
    """Every one-off call of every client, in every mode of the echo server: each fails."""
    n = 0
    for mode in MODES:
        for backend in BACKENDS:
            credentials = credentials_for(backend, f"{url}/{mode}")
            client = credentials.get_client(sleep=_fast_sleep)
            scan.text(f"client repr {backend}", repr(client))
            scan.text(f"credentials repr {backend}", repr(credentials))
            scan.text(f"credentials str {backend}", str(credentials))
            try:
                for name, call in _calls(client, backend):
                    n += 1
                    try:
                        answer = await call()
                    except AgentRunsError as exc:
                        scan.exception(f"{mode} {backend} {name}", exc)
                    else:  # e.g. a result read from an answer with no messages in it
                        scan.text(f"answer {mode} {backend} {name}", repr(answer))
            finally:
                await client.aclose()
    return n


async def _batches(scan: Scan, url: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """run_batch on every backend: unsaved blocks (key inline, then also in an environment
    variable), saved blocks, and fail_on="any" (the flow run fails with BatchFailed)."""
    n = 0
    for backend in BACKENDS:
        for mode in ("m401", "mshape"):  # m500: one-off calls (its lookups take the window)
            credentials = credentials_for(backend, f"{url}/{mode}")
            variants: list[tuple[str, AgentRunsCredentials, str]] = [
                ("unsaved", credentials, "never")
            ]
            if mode == "m401":
                saved_name = f"canary-{backend.replace('_', '-')}"
                await credentials.save(saved_name, overwrite=True)
                loaded = await type(credentials).load(saved_name)
                variants.append(("saved", loaded, "any"))
            for variant, creds, fail_on in variants:
                if variant == "unsaved" and mode == "mshape":
                    # the ledger records the name of a variable that holds the key
                    monkeypatch.setenv("CANARY_SECRET_ENV", CANARY_KEY)
                    monkeypatch.setenv("CANARY_TOKEN_ENV", CANARY_TOKEN)
                n += 1
                where = f"{backend} {mode} {variant}"
                try:
                    result = await run_batch(
                        creds, items_for(backend), timeout_seconds=5, fail_on=fail_on
                    )
                except AgentRunsError as exc:
                    scan.exception(f"batch {where}", exc)
                    result = getattr(exc, "result", None)
                    if result is None:
                        scan.hits.append(f"batch {where}: {type(exc).__name__} without a result")
                        continue
                else:
                    if fail_on == "any":
                        scan.hits.append(f"batch {where}: did not fail")
                assert not result.completed, where
                for outcome in result.outcomes:
                    scan.text(f"outcome {where} error", outcome.error)
                    scan.text(f"outcome {where} repr", repr(outcome))
                scan.text(f"records {where}", json.dumps(result.to_records(), default=str))
                monkeypatch.delenv("CANARY_SECRET_ENV", raising=False)
                monkeypatch.delenv("CANARY_TOKEN_ENV", raising=False)
    return n


async def _jobs(scan: Scan, url: str) -> int:
    """AgentRunJob with unsaved and with saved credentials (and saved itself)."""
    n = 0
    for backend in BACKENDS:
        for mode in ("m401", "mshape"):
            credentials = credentials_for(backend, f"{url}/{mode}")
            job = AgentRunJob(
                credentials=credentials,
                assistant_id="a",
                message="hi",
                thread_id="t1" if backend == "project_threads" else None,
                timeout_seconds=5,
            )
            jobs = [("unsaved", job)]
            if mode == "m401":
                name = f"canary-job-{backend.replace('_', '-')}"
                await credentials.save(f"{name}-creds", overwrite=True)
                saved = AgentRunJob(
                    credentials=await type(credentials).load(f"{name}-creds"),
                    assistant_id="a",
                    message="hi",
                    thread_id="t1" if backend == "project_threads" else None,
                )
                await saved.save(name, overwrite=True)
                jobs.append(("saved", await AgentRunJob.load(name)))
            for variant, one in jobs:
                n += 1
                scan.text(f"job repr {backend} {variant}", repr(one))
                try:
                    await one.atrigger()
                except AgentRunsError as exc:
                    scan.exception(f"job {backend} {mode} {variant}", exc)
                else:
                    scan.hits.append(f"job {backend} {mode} {variant}: trigger did not fail")
    return n


def _cli(scan: Scan, url: str, tmp_path: Path) -> int:
    """The CLI with --api-key-env (two backends) and --block (a saved project block)."""
    from prefect.settings import PREFECT_API_URL

    n = 0
    runs: list[tuple[str, list[str], list[dict[str, Any]]]] = [
        ("langgraph", ["--backend", "langgraph", "--url", f"{url}/m401",
                       "--api-key-env", "CANARY_KEY_ENV"], items_for("langgraph")),
        ("workflow_runs", ["--backend", "workflow_runs", "--url", f"{url}/mshape",
                           "--api-key-env", "CANARY_KEY_ENV"], items_for("workflow_runs")),
        ("project_threads", ["--block", "canary-project-threads"], items_for("project_threads")),
    ]  # fmt: skip
    started: list[tuple[str, Path, Path, subprocess.Popen[bytes]]] = []
    try:
        # the three commands at once (each a Python and Prefect start of its own)
        for backend, args, items in runs:
            home = tmp_path / f"cli-home-{backend}"
            home.mkdir()
            source = tmp_path / f"items-{backend}.jsonl"
            source.write_text("".join(json.dumps(item) + "\n" for item in items))
            out = tmp_path / f"results-{backend}.jsonl"
            env = {
                **os.environ,
                "CANARY_KEY_ENV": CANARY_KEY,
                "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "PREFECT_HOME": str(home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONPATH": os.pathsep.join(sys.path),
            }
            code = "import sys; from prefect_agent_runs.cli import main; sys.exit(main())"
            command = [sys.executable, "-c", code, "run", str(source), *args, "--assistant", "a",
                       "--out", str(out), "--timeout", "5", "-v"]  # fmt: skip
            process = spawn(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            started.append((backend, home, out, process))
        for backend, home, out, process in started:
            stdout, stderr = process.communicate(timeout=180)
            n += 1
            scan.text(f"cli {backend} stdout", stdout)
            scan.text(f"cli {backend} stderr", stderr)
            assert process.returncode == 1, (backend, process.returncode, stderr[-3000:])
            assert out.exists(), backend
            scan.text(f"cli {backend} results file", out.read_bytes())
            scan.tree(home)
    finally:
        for *_, process in started:
            end_group(process, grace=0)
    return n


async def _all(read: Callable[..., Awaitable[list[Any]]], **kwargs: Any) -> list[Any]:
    """Every object of a Prefect API list (pages of 200, the server's limit)."""
    out: list[Any] = []
    while True:
        page = await read(limit=200, offset=len(out), **kwargs)
        out += page
        if len(page) < 200:
            return out


async def _prefect_api(scan: Scan) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        for log in await _all(client.read_logs):
            scan.text("api-log", log.message)
        for artifact in await _all(client.read_artifacts):
            scan.text(f"artifact {artifact.key}", json.dumps(artifact.data, default=str))
            scan.text(f"artifact {artifact.key} description", artifact.description)
        for flow_run in await _all(client.read_flow_runs):
            if flow_run.state is not None:
                scan.text("state flow run", flow_run.state.message)
            scan.text("parameters flow run", json.dumps(flow_run.parameters, default=str))
            scan.text("flow-run name/tags", f"{flow_run.name} {flow_run.tags}")
        for task_run in await _all(client.read_task_runs):
            if task_run.state is not None:
                scan.text("state task run", task_run.state.message)
        for document in await _all(client.read_block_documents, include_secrets=False):
            scan.text(f"block-document {document.name}", json.dumps(document.data, default=str))


def _files(scan: Scan) -> None:
    from prefect.settings import (
        PREFECT_API_DATABASE_CONNECTION_URL,
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
    )

    scan.tree(Path(str(PREFECT_HOME.value())).expanduser())
    scan.tree(Path(str(PREFECT_LOCAL_STORAGE_PATH.value())).expanduser())
    url = str(PREFECT_API_DATABASE_CONNECTION_URL.value() or "")
    assert url.startswith("sqlite"), url
    db = Path(url.split("///", 1)[-1])
    assert db.exists(), db
    for path in db.parent.glob(db.name + "*"):
        scan.text(f"database {path}", path.read_bytes())


@pytest.mark.usefixtures("prefect_harness")
async def test_the_canary_key_and_token_appear_nowhere(
    echo_server: EchoServer,
    capture: Capture,
    fast_creates: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scan = Scan()
    calls = await _direct_calls(scan, echo_server.url)
    batches = await _batches(scan, echo_server.url, monkeypatch)
    jobs = await _jobs(scan, echo_server.url)
    # the project-threads block the CLI loads by name
    await credentials_for("project_threads", f"{echo_server.url}/m401").save(
        "canary-project-threads", overwrite=True
    )
    await _emulator_calls(scan)
    cli_runs = _cli(scan, echo_server.url, tmp_path)
    for record in list(capture.records.values()):
        scan.text(f"log {record.name}", record.getMessage())
        scan.text(f"log {record.name} args", repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            scan.exception(f"log {record.name}", record.exc_info[1])
    await _prefect_api(scan)
    _files(scan)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(scan.by_kind.items()))
    print(
        f"canary scan: {scan.places} places scanned ({summary}); {calls} calls, {batches} "
        f"batches, {jobs} jobs, {cli_runs} CLI runs, {len(capture.records)} log records; "
        f"{len(scan.hits)} hits"
    )
    assert echo_server.hits > 100
    assert scan.by_kind.get("database", 0) >= 1 and scan.by_kind.get("api-log", 0) > 10
    assert scan.by_kind.get("artifact", 0) > 10 and scan.by_kind.get("log", 0) > 100
    assert scan.hits == [], "\n".join(scan.hits[:50])


async def _emulator_calls(scan: Scan) -> None:
    """The emulators record requests with their headers, masked."""
    with (
        AssistantsEmulator(run_seconds=0.01) as aemu,
        WorkflowRunsEmulator(run_seconds=0.01, api_key=CANARY_KEY, client_id="c") as wemu,
        ProjectThreadsEmulator(run_seconds=0.01, token=CANARY_TOKEN) as pemu,
    ):
        thread = pemu.create_thread()
        async with AssistantsCredentials(
            base_url=aemu.base_url, api_key=CANARY_KEY
        ).get_client() as oa:
            await oa.create_run(RunRequest(assistant_id="asst_echo", message="hi"))
        async with WorkflowRunsCredentials(
            base_url=wemu.base_url, api_key=CANARY_KEY, client_id="c"
        ).get_client() as wr:
            await wr.create_run(RunRequest(assistant_id="wf", message="hi"))
        async with ProjectThreadsCredentials(
            base_url=pemu.base_url, token=CANARY_TOKEN, project_id=pemu.project_id
        ).get_client() as pt:
            await pt.create_run(RunRequest(assistant_id="p", message="hi", thread_id=thread))
        async with LangGraphCredentials(
            base_url=aemu.url, api_key=CANARY_KEY, max_retries=0
        ).get_client() as lg:
            try:
                await lg.get_run("r1", thread_id="t1")  # x-api-key to the emulator: a 404
            except AgentRunsError as exc:
                scan.exception("emulator 404", exc)
        for emu in (aemu, wemu, pemu):
            assert emu.requests
            for record in list(emu.requests):
                scan.text(f"emulator {type(emu).__name__} recorded request", repr(record))


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_verification_is_on_by_default_and_off_only_with_a_warning(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every credentials block: verification on by default; verify_tls=False turns it off
    (not silently ignored) and logs a warning naming the backend."""
    caplog.set_level(logging.WARNING, logger="prefect_agent_runs")
    on = credentials_for(backend, "https://api.example.com").get_client()
    assert not [r for r in caplog.records if "TLS" in r.getMessage()]
    off_creds = credentials_for(backend, "https://api.example.com").model_copy(
        update={"verify_tls": False}
    )
    off = off_creds.get_client()
    (record,) = [r for r in caplog.records if "TLS" in r.getMessage()]
    assert "TLS certificate verification is OFF" in record.getMessage()
    assert backend in record.getMessage()
    for client, mode in ((on, "CERT_REQUIRED"), (off, "CERT_NONE")):
        shards = client.transport.client._transport._shards
        assert shards  # every pool of the sharded transport verifies (or not) alike
        for shard in shards:
            assert shard.transport._pool._ssl_context.verify_mode.name == mode
