"""run_batch through the fault proxy: every item exactly once, every result right.

The proxy faults 20 % of all requests with the seven kinds of issue 13, before *and after*
the server handled them, in front of the real LangGraph server and each emulator. The
server is then asked (directly) how many threads and runs each key has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
from _harness import (
    BatchReport,
    Target,
    assistants_count,
    judge,
    langgraph_count,
    langgraph_items,
    message_items,
    new_batch_key,
)
from _proxy import ALL_KINDS, Fault, FaultProxy

from prefect_agent_runs import AssistantsCredentials, LangGraphCredentials
from prefect_agent_runs.flows import run_batch
from prefect_agent_runs.testing import AssistantsEmulator
from prefect_agent_runs.testing.langgraph_dev import LangGraphDevServer

pytestmark = pytest.mark.usefixtures("prefect_harness")

REQUEST_TIMEOUT = 2.0
STALL = 2.5
LOOKUP_WINDOW = 4.0
"""The create lookup window in these tests (default 30 s): covers a create held 3 s."""
LATE_HOLD = 3.0
"""A late create is held this long (the issue's 20 s, scaled like the timeouts)."""
REPORTS: list[BatchReport] = []


@pytest.fixture(autouse=True)
def short_lookup_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_agent_runs.backends import create

    monkeypatch.setattr(create, "LOOKUP_WINDOW_SECONDS", LOOKUP_WINDOW)


@pytest.fixture
def assistants_emulator() -> Iterator[AssistantsEmulator]:
    with AssistantsEmulator(run_seconds=0.05, poll_after_ms=50) as emu:
        yield emu


def _target(name: str, request: pytest.FixtureRequest) -> Target:
    if name == "langgraph":
        server: LangGraphDevServer = request.getfixturevalue("langgraph_server")
        return Target(
            name=name,
            server_url=server.base_url,
            make_credentials=lambda url: LangGraphCredentials(
                base_url=url, request_timeout_seconds=REQUEST_TIMEOUT
            ),
            make_items=langgraph_items,
            expected_text=lambda i: f"echo: q{i}",
            count=langgraph_count(server.base_url),
        )
    emu: AssistantsEmulator = request.getfixturevalue("assistants_emulator")
    return Target(
        name=name,
        server_url=emu.base_url,
        make_credentials=lambda url: AssistantsCredentials(
            base_url=url, api_key="sk-test-key", request_timeout_seconds=REQUEST_TIMEOUT
        ),
        make_items=lambda n: message_items(n, "asst_echo"),
        expected_text=lambda i: f"echo: q{i}",
        count=assistants_count(emu),
    )


async def _run(
    target: Target,
    caplog: pytest.LogCaptureFixture,
    *,
    n: int,
    rate: float,
    kinds: tuple[Fault, ...],
    label: str,
    late_rate: float = 0.0,
    late_hold: float = 20.0,
    seed: int = 13,
) -> BatchReport:
    caplog.set_level(logging.INFO, logger="prefect_agent_runs")
    with FaultProxy(target.server_url, stall_seconds=STALL, late_hold_seconds=late_hold) as proxy:
        proxy.set_faults(rate, kinds, late_rate=late_rate, seed=seed)
        batch_key = new_batch_key(f"faults-{target.name}")
        started = time.monotonic()
        result = await run_batch(
            target.make_credentials(proxy.url_for(target.server_url)),
            target.make_items(n),
            batch_key=batch_key,
            max_concurrency=64,
        )
        seconds = time.monotonic() - started
        faults = sum(v for k, v in proxy.counts().items() if k != "none")
        # let held creates land before counting duplicates
        assert await asyncio.to_thread(proxy.wait_late_delivered, late_hold + 10)
    report = judge(
        target,
        result,
        batch_key,
        fault=label,
        n=n,
        log_records=caplog.records,
        faults_injected=faults,
        seconds=seconds,
    )
    REPORTS.append(report)
    print(report.row(), f"({report.seconds} s)")
    return report


@pytest.mark.parametrize("backend", ["langgraph", "openai_assistants"])
async def test_300_items_with_20_percent_faults(
    backend: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    target = _target(backend, request)
    report = await _run(target, caplog, n=300, rate=0.2, kinds=ALL_KINDS, label="all 7 kinds, 20 %")
    assert report.faults_injected > 200
    assert report.errors == [], report.errors[:5]
    assert (report.lost, report.wrong, report.duplicates) == (0, 0, 0)
    assert report.retries > 0


KIND_ITEMS = 20


@pytest.mark.parametrize("kind", [*ALL_KINDS, Fault.LATE_CREATE], ids=lambda k: k.value)
@pytest.mark.parametrize("backend", ["langgraph", "openai_assistants"])
async def test_each_fault_kind_alone(
    backend: str, kind: Fault, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """One kind at a time, 30 % of requests (of creates, for a late create): the table's rows.

    A late create is held 3 s (the client's read timeout is 2 s) and then delivered: the
    lookup window (4 s here, 30 s by default) covers it, so nothing is started twice.
    """
    target = _target(backend, request)
    late = kind is Fault.LATE_CREATE
    report = await _run(
        target,
        caplog,
        n=KIND_ITEMS,
        rate=0.0 if late else 0.3,
        kinds=(kind,),
        label=kind.value,
        late_rate=0.3 if late else 0.0,
        late_hold=LATE_HOLD,
        seed=sum(map(ord, kind.value)),
    )
    assert report.faults_injected > 0
    assert report.errors == [], report.errors[:5]
    assert (report.lost, report.wrong, report.duplicates) == (0, 0, 0)


async def test_a_create_later_than_the_window_is_the_stated_bound(
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bound: a create delivered after the lookup window may start a second run. With
    the window shorter than the hold, duplicates appear, at most one per late create."""
    from prefect_agent_runs.backends import create

    monkeypatch.setattr(create, "LOOKUP_WINDOW_SECONDS", 0.2)
    target = _target("openai_assistants", request)
    report = await _run(
        target,
        caplog,
        n=KIND_ITEMS,
        rate=0.0,
        kinds=(Fault.LATE_CREATE,),
        label="late create past the window",
        late_rate=0.3,
        late_hold=4.0,
        seed=5,
    )
    late = report.faults_injected
    assert report.lost == 0
    assert report.duplicates <= late
