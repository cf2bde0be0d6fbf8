"""Batches at any size: items by reference, small flow-run parameters, the ledger's durability.

The 10,000-item batch (Prefect's default server settings, the parameters read back from the
API) is tests/faults/test_load.py: there the emulator runs in a process of its own, behind the
fault proxy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from _echo import echo_requests
from prefect.client.orchestration import get_client

from prefect_agent_runs import AssistantsCredentials, RunStatus
from prefect_agent_runs.flows import arun_batch, run_batch
from prefect_agent_runs.flows._ledger import BatchLedger, LedgerUnreadable, batch_path
from prefect_agent_runs.flows.sources import ItemsSource
from prefect_agent_runs.testing import AssistantsEmulator

pytestmark = pytest.mark.usefixtures("prefect_harness")

PARAMETER_LIMIT = 16 * 1024


async def parameters_of(flow_run_id: Any) -> dict[str, Any]:
    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
    return dict(flow_run.parameters)


async def test_calling_the_flow_object_with_a_list_stores_it(
    emulator: AssistantsEmulator, batch_key: str
) -> None:
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test-key")
    state = await arun_batch(credentials, echo_requests(30), batch_key=batch_key, return_state=True)
    result = await state.result()
    assert all(o.ok for o in result.outcomes)
    parameters = await parameters_of(state.state_details.flow_run_id)
    assert parameters["requests"]["count"] == 30
    assert len(json.dumps(parameters, default=str).encode()) < PARAMETER_LIMIT
    async with get_client() as client:
        flow_run = await client.read_flow_run(state.state_details.flow_run_id)
    assert flow_run.name == batch_key
    assert f"batch:{batch_key}" in flow_run.tags


async def test_a_list_is_served_from_memory_to_its_call_and_stored_for_any_other(
    emulator: AssistantsEmulator, batch_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefect_agent_runs.flows.sources as sources

    reads: list[str] = []
    read_back = sources._result_lines

    def counted(path: str) -> Any:
        reads.append(path)
        return read_back(path)

    monkeypatch.setattr(sources, "_result_lines", counted)
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test-key")
    requests = [*echo_requests(20), {"assistant_id": "asst_echo", "message": "unkeyed"}]
    state = await arun_batch(credentials, requests, batch_key=batch_key, return_state=True)
    result = await state.result()
    assert reads == []  # its own call did not read the document back
    assert sources._HELD == {}  # nor does the process keep the items after the call
    assert [o.key for o in result.outcomes] == [f"item-{i}" for i in range(20)] + ["20"]
    texts = [o.result.text for o in result.outcomes if o.result]
    assert texts == [f"echo: q{i}" for i in range(20)] + ["echo: unkeyed"]

    # the stored document holds the same items: what a retry elsewhere, or a run of the
    # flow with the reference from its parameters, reads
    source = ItemsSource.model_validate(
        (await parameters_of(state.state_details.flow_run_id))["requests"]
    )
    again = await arun_batch(credentials, source, batch_key=batch_key + "-again")
    assert reads == [source.path]
    assert [o.key for o in again.outcomes] == [o.key for o in result.outcomes]
    assert [o.result.text for o in again.outcomes if o.result] == texts


def test_items_stored_by_hand_are_run_from_their_reference(
    emulator: AssistantsEmulator, batch_key: str
) -> None:
    """``store_items``: for a caller who passes the reference itself (``with_options``, a
    deployment run). A repeated key stores nothing."""
    from prefect_agent_runs.errors import ValidationError
    from prefect_agent_runs.flows.sources import store_items

    with pytest.raises(ValidationError, match="items 0 and 3 have the same key 'item-0'"):
        store_items([*echo_requests(3), *echo_requests(2)])
    source = store_items(echo_requests(15))
    assert (source.storage, source.count) == ("result", 15)
    assert source.sha256 is not None and source.path.endswith(f"{source.sha256[:32]}.jsonl")
    assert store_items(echo_requests(15)) == source  # the same items, the same document
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test-key")
    result = run_batch(credentials, source, batch_key=batch_key)
    assert [o.result.text for o in result.outcomes if o.result] == [
        f"echo: q{i}" for i in range(15)
    ]


def test_an_embedded_server_that_timed_out_is_stopped_and_started_again(
    emulator: AssistantsEmulator, tmp_path: Path
) -> None:
    """In Prefect's embedded mode (no API URL, a fresh PREFECT_HOME) the first server start
    times out. Storing the list must not swallow that, as ``prefect.results`` does, and let
    the flow engine start a second server over the first: the first would outlive the
    program. It is stopped and started again, and the batch runs."""
    import os
    import sys

    from conftest import SCRIPTS

    from prefect_agent_runs.testing._process import run

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"  # the second start's
    script = str(SCRIPTS / "slow_embedded_start.py")
    completed = run(
        [sys.executable, script, emulator.base_url, "6"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.splitlines()[-1])
    assert len(report["started"]) == 2, report  # one start timed out, one more was made
    second = report["started"][1]
    assert report["running"] == [second], report  # the one that timed out was stopped
    assert report["texts"] == [f"echo: q{i}" for i in range(6)]
    assert completed.left_behind == {}, completed.left_behind


def test_sync_run_batch_with_a_jsonl_path(
    emulator: AssistantsEmulator, batch_key: str, tmp_path: Path
) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        "".join(json.dumps({"key": f"j{i}", "message": f"m{i}"}) + "\n" for i in range(12))
    )
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test-key")
    result = run_batch(
        credentials,
        ItemsSource(path=str(path), assistant_id="asst_echo"),
        batch_key=batch_key,
    )
    assert [o.key for o in result.outcomes] == [f"j{i}" for i in range(12)]
    assert [o.result.text for o in result.outcomes if o.result] == [
        f"echo: m{i}" for i in range(12)
    ]


async def test_csv_url_source(emulator: AssistantsEmulator, batch_key: str, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "message", "assistant_id"])
        for i in range(5):
            writer.writerow([f"c{i}", f"line one {i}\nline two", "asst_echo"])
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test-key")
    result = await run_batch(credentials, f"file://{path}", batch_key=batch_key)
    assert [o.key for o in result.outcomes] == [f"c{i}" for i in range(5)]
    assert all(o.ok for o in result.outcomes)


async def test_a_bad_line_in_a_source_sends_nothing(
    emulator: AssistantsEmulator, batch_key: str, tmp_path: Path
) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"key": "a", "message": "x"}\n{"key": "a", "message": "y"}\n')
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test-key")
    state = await run_batch(
        credentials,
        ItemsSource(path=str(path), assistant_id="asst_echo"),
        batch_key=batch_key,
        return_state=True,
    )
    assert state.is_failed()
    assert "line 2" in (state.message or "")
    assert emulator.runs() == []


# -- the ledger ------------------------------------------------------------------------------


async def test_ledger_records_a_create_before_it_is_sent(batch_key: str) -> None:
    """A SIGKILL between the create and the next flush used to lose the run (issue 13)."""
    from prefect_agent_runs.models import Run

    ledger = BatchLedger(batch_key)
    await ledger.load()
    await ledger.start(flow_run_id=None, credentials=None)
    await ledger.creating("a")
    # no flush, no close: another process reads the ledger now, as after a SIGKILL
    reread = await BatchLedger(batch_key).load()
    assert reread.in_flight == {"a"}
    run = Run(
        id="run_1", thread_id="thread_1", status=RunStatus.QUEUED, backend="openai_assistants"
    )
    await ledger.created("a", run)
    reread = await BatchLedger(batch_key).load()
    assert reread.in_flight == set()
    assert reread.known_runs("openai_assistants")["a"].id == "run_1"
    await ledger.close()


async def test_creates_together_are_each_in_the_file_and_share_an_fsync(batch_key: str) -> None:
    """Each record is written when it is made; one ``fsync`` covers every write before it."""
    import asyncio

    ledger = BatchLedger(batch_key)
    await ledger.load()
    await ledger.start(flow_run_id=None, credentials=None)
    await ledger.flush()
    syncs = ledger.syncs
    await asyncio.gather(*(ledger.creating(f"k{i}") for i in range(256)))
    reread = await BatchLedger(batch_key).load()  # no flush: as after a SIGKILL
    assert reread.in_flight == {f"k{i}" for i in range(256)}
    await ledger.flush()
    assert 1 <= ledger.syncs - syncs <= 2  # not 256
    await ledger.close()


async def test_the_writer_spaces_its_fsyncs(batch_key: str) -> None:
    """Creates over many turns of the loop share the writer's ``fsync``s, at most one per
    ``sync_interval_seconds`` (without it: one per turn, 31 a second at 10,000 items)."""
    import asyncio

    ledger = BatchLedger(batch_key, sync_interval_seconds=3600.0)  # no second one in here
    await ledger.load()
    await ledger.start(flow_run_id=None, credentials=None)
    await ledger.flush()
    syncs = ledger.syncs
    for i in range(40):
        await ledger.creating(f"k{i}")
        for _ in range(3):  # turns of the loop: the writer wakes, fsyncs, sleeps
            await asyncio.sleep(0)
        if i == 0:
            for _ in range(1000):  # the first fsync, in the writer's thread
                if ledger.syncs > syncs:
                    break
                await asyncio.sleep(0.005)
    assert ledger.syncs == syncs + 1
    reread = await BatchLedger(batch_key).load()  # every record is in the file all the same
    assert reread.in_flight == {f"k{i}" for i in range(40)}
    await ledger.close()  # the last fsync does not wait for the interval
    assert ledger.syncs == syncs + 2
    assert ledger._log is not None and not ledger._log.unsynced


async def test_a_create_does_not_wait_for_the_fsync(
    batch_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is in the file (the kernel's) before ``creating`` returns; the ``fsync``
    follows in the writer. Waiting for it cost each create 64 ms at 10,000 items."""
    import asyncio
    import os
    import threading

    ledger = BatchLedger(batch_key)
    await ledger.load()
    await ledger.start(flow_run_id=None, credentials=None)
    await ledger.flush()
    log = ledger._log
    assert log is not None and log._handle is not None
    ours = log._handle.fileno()
    entered, gate = threading.Event(), threading.Event()
    real = os.fsync

    def fsync(fd: int) -> None:
        if fd == ours:
            entered.set()
            gate.wait(30)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    try:
        # with the old durable wait this never returned while the fsync was held
        await asyncio.wait_for(ledger.creating("a"), 10)
        assert await asyncio.to_thread(entered.wait, 10)  # the writer is in its fsync
        await asyncio.wait_for(ledger.creating("b"), 10)  # and "b" still does not wait
        reread = await BatchLedger(batch_key).load()
        assert reread.in_flight == {"a", "b"}
        syncs = ledger.syncs
    finally:
        gate.set()
    await ledger.flush()  # waits for the fsync in progress, then fsyncs "b"
    assert ledger.syncs == syncs + 2
    assert not log.unsynced
    await ledger.close()


async def test_a_failed_write_reaches_the_create_and_the_next_write_succeeds(
    batch_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_agent_runs.flows import _ledger

    ledger = BatchLedger(batch_key)
    await ledger.load()
    await ledger.start(flow_run_id=None, credentials=None)
    real = _ledger._Log._write_local
    failures = iter([OSError(28, "No space left on device")])

    def write_local(self: Any, data: bytes) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real(self, data)

    monkeypatch.setattr(_ledger._Log, "_write_local", write_local)
    with pytest.raises(OSError, match="No space"):
        await ledger.creating("a")  # the create is not sent: nothing was recorded
    await ledger.creating("b")  # the writer is still there
    reread = await BatchLedger(batch_key).load()
    assert reread.in_flight == {"b"}
    await ledger.close()


async def test_a_write_cut_short_leaves_the_next_record_readable(batch_key: str) -> None:
    """Half a line from a failed write (disk full) must not swallow the next record."""
    ledger = BatchLedger(batch_key)
    await ledger.load()
    await ledger.start(flow_run_id=None, credentials=None)
    log = ledger._log
    assert log is not None and log._handle is not None
    handle = log._handle

    class HalfThenFull:
        def write(self, data: memoryview) -> int:
            handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    log._handle = HalfThenFull()  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space"):
        await ledger.creating("a")
    log._handle = handle
    await ledger.creating("b")
    reread = await BatchLedger(batch_key).load()
    assert reread.in_flight == {"b"}
    await ledger.close()


async def test_ledger_read_error_is_raised_not_ignored(batch_key: str) -> None:
    ledger = BatchLedger(batch_key)
    await ledger.load()
    await ledger.start(flow_run_id=None, credentials=None)
    await ledger.close()
    log = ledger._log
    assert log is not None and log.local is not None
    log.local.chmod(0)
    try:
        if log.local.stat().st_mode & 0o444 == 0 and _can_read(log.local):
            # root reads anything: make the path unreadable another way
            log.local.chmod(0o644)
            log.local.unlink()
            log.local.mkdir()
        with pytest.raises(LedgerUnreadable, match="cannot read the batch ledger"):
            await BatchLedger(batch_key).load()
    finally:
        if log.local.is_dir():
            log.local.rmdir()
        else:
            log.local.chmod(0o644)


def _can_read(path: Path) -> bool:
    try:
        path.read_bytes()
    except PermissionError:
        return False
    return True


async def test_ledger_write_cost_does_not_grow_with_the_batch(batch_key: str) -> None:
    from prefect_agent_runs.models import Run

    ledger = BatchLedger(batch_key)
    await ledger.load()
    await ledger.start(flow_run_id=None, credentials=None)
    log = ledger._log
    assert log is not None and log.local is not None
    sizes = []
    for i in range(2000):
        run = Run(id=f"run_{i}", status=RunStatus.QUEUED, backend="openai_assistants")
        before = log.local.stat().st_size
        await ledger.created(f"k{i}", run)
        sizes.append(log.local.stat().st_size - before)
    assert max(sizes[-100:]) <= max(sizes[:100]) + 10  # appends, never rewrites
    await ledger.close()


async def test_ledger_never_holds_a_secret(
    emulator: AssistantsEmulator, batch_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = "sk-canary-5d1f0c9e2b7a"
    monkeypatch.setenv("MY_ASSISTANTS_KEY", canary)
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key=canary)
    await run_batch(credentials, echo_requests(3), batch_key=batch_key)
    ledger = await BatchLedger(batch_key).load()
    log = ledger._log
    assert log is not None and log.local is not None
    text = log.local.read_text()
    assert canary not in text
    reference = ledger.credentials_reference()
    assert reference is not None
    assert reference["secrets_from_env"] == {"api_key": "MY_ASSISTANTS_KEY"}
    from prefect_agent_runs.flows._ledger import load_credentials

    loaded = await load_credentials(reference)
    assert loaded is not None
    assert loaded.api_key.get_secret_value() == canary  # type: ignore[attr-defined]


async def test_inline_key_is_not_recorded_and_the_flow_says_so(
    emulator: AssistantsEmulator, batch_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "sk-inline-only-8c2e41"
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key=canary)
    await run_batch(credentials, echo_requests(2), batch_key=batch_key)
    ledger = await BatchLedger(batch_key).load()
    assert ledger.credentials_reference() is None
    assert ledger._log is not None and ledger._log.local is not None
    assert canary not in ledger._log.local.read_text()
    assert any("in process" in r.getMessage() for r in caplog.records)
    assert batch_path(batch_key).endswith(".jsonl")
