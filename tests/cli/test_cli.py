"""Tests of the ``prefect-agent-runs`` command: items, ``run`` end to end, ``demo``."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefect_agent_runs.cli import main
from prefect_agent_runs.cli.items import ItemError, detect_format, parse_items, read_items
from prefect_agent_runs.cli.progress import ProgressBar
from prefect_agent_runs.models import Run, RunOutcome, RunStatus
from prefect_agent_runs.testing._process import run
from prefect_agent_runs.testing.assistants import AssistantsEmulator

CONSOLE_SCRIPT = Path(sys.executable).parent / "prefect-agent-runs"
FAIL = {"emulator": json.dumps({"outcome": "failed"})}


def write_jsonl(path: Path, items: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def emulator() -> Iterator[AssistantsEmulator]:
    with AssistantsEmulator(run_seconds=0.2) as emu:
        yield emu


# -- items ---------------------------------------------------------------------------------


def test_jsonl_items() -> None:
    lines = [
        '{"key": "a", "message": "hi"}\n',
        "\n",
        '{"key": 7, "input": {"x": 1}, "assistant_id": "other", "metadata": {"m": "1"}}\n',
        '{"message": "no key", "thread_id": "t1", "instructions": "be brief", "options": {"o": 1}}\n',
    ]
    requests = parse_items(lines, "jsonl", "items.jsonl", default_assistant_id="asst_1")
    assert [r.key for r in requests] == ["a", "7", None]
    assert [r.assistant_id for r in requests] == ["asst_1", "other", "asst_1"]
    assert requests[1].input == {"x": 1} and requests[1].metadata == {"m": "1"}
    assert requests[2].thread_id == "t1" and requests[2].options == {"o": 1}
    assert requests[2].instructions == "be brief"


def test_csv_items(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "key,message,input,metadata,options\n"
        'a,hello,,"{""emulator"": ""{}""}",\n'
        'b,,"{""sleep_seconds"": 1}",,"{""stream"": true}"\n',
        encoding="utf-8",
    )
    assert detect_format(str(path)) == "csv"
    requests = read_items(str(path), default_assistant_id="echo")
    assert [r.key for r in requests] == ["a", "b"]
    assert requests[0].message == "hello" and requests[0].metadata == {"emulator": "{}"}
    assert requests[1].input == {"sleep_seconds": 1} and requests[1].options == {"stream": True}


def test_stdin_items() -> None:
    stream = io.StringIO('{"key": "x", "message": "m"}\n{"key": "y", "message": "n"}\n')
    requests = read_items("-", default_assistant_id="asst_1", stdin=stream)
    assert [r.message for r in requests] == ["m", "n"]


@pytest.mark.parametrize(
    ("lines", "line", "words"),
    [
        (['{"key": "a", "message": "m"}', "", "{not json"], 3, "not valid JSON"),
        (['{"key": "a", "message": "m"}', "[1, 2]"], 2, "JSON object"),
        (['{"key": "a"}'], 1, "'message' or an 'input'"),
        (['{"key": "a", "message": "m"}', '{"key": "a", "message": "n"}'], 2, "line 1"),
        (['{"key": "a", "message": "m", "colour": "red"}'], 1, "'colour'"),
        (['{"key": "a", "input": "text"}'], 1, "'input' must be a JSON object"),
    ],
)
def test_bad_jsonl_line(lines: list[str], line: int, words: str) -> None:
    with pytest.raises(ItemError) as caught:
        parse_items([t + "\n" for t in lines], "jsonl", "f.jsonl", default_assistant_id="a")
    assert caught.value.line == line
    assert f"f.jsonl, line {line}:" in str(caught.value) and words in str(caught.value)


def test_bad_csv_cell_names_the_line() -> None:
    rows = ["key,message,metadata\n", "a,hi,\n", "b,hi,{oops\n"]
    with pytest.raises(ItemError, match=r"line 3: column 'metadata' is not valid JSON"):
        parse_items(rows, "csv", "f.csv", default_assistant_id="a")
    with pytest.raises(ItemError, match=r"line 1: unknown column"):
        parse_items(["key,msg\n", "a,hi\n"], "csv", "f.csv", default_assistant_id="a")


def test_missing_assistant_is_an_item_error() -> None:
    with pytest.raises(ItemError, match="--assistant"):
        parse_items(['{"message": "m"}\n'], "jsonl")


def test_run_bad_line_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"key": "a", "message": "m"}\n{"key": "b", "message": }\n', encoding="utf-8")
    argv = ["run", str(path), "--backend", "openai_assistants", "--url", "http://127.0.0.1:9/v1"]
    assert main([*argv, "--assistant", "asst_1"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "not valid JSON" in err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--backend", "langgraph"], "--url is required"),
        (
            ["--backend", "langgraph", "--url", "http://x", "--api-key-env", "NO_SUCH_VAR_X"],
            "NO_SUCH_VAR_X",
        ),
        (["--block", "b", "--url", "http://x"], "--url cannot be combined with --block"),
        (["--backend", "langgraph", "--url", "http://x", "--fail-on", "most"], "--fail-on"),
        (["--url", "http://x"], "one of the arguments --block --backend is required"),
        (["--backend", "langgraph", "--url", "http://x", "--max-concurrency", "0"], "at least 1"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    path = write_jsonl(tmp_path / "items.jsonl", [{"key": "a", "message": "m"}])
    assert main(["run", str(path), "--assistant", "echo", *extra]) == 2
    assert words in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


# -- progress --------------------------------------------------------------------------------


def test_progress_plain_lines_every_ten_percent() -> None:
    stream = io.StringIO()
    bar = ProgressBar(20, stream=stream)
    assert not bar.interactive
    for i in range(20):
        bar.advance(failed=1 if i == 3 else 0)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("runs: 2/20 (10%)") and lines[-1].startswith("runs: 20/20 (100%")
    assert "1 failed" in lines[-1]


def test_progress_terminal_redraws_one_line() -> None:
    stream = io.StringIO()
    bar = ProgressBar(4, stream=stream, interactive=True, min_interval_seconds=0)
    bar.start()
    ok = RunOutcome(key="k", run=Run(id="r", status=RunStatus.COMPLETED, backend="langgraph"))
    bad = RunOutcome(key="k", run=Run(id="r", status=RunStatus.FAILED, backend="langgraph"))
    bar.on_outcome(ok, 1, 4)
    bar.on_outcome(bad, 2, 4)
    bar.on_outcome(ok, 3, 4)
    bar.close()
    text = stream.getvalue()
    assert "\n" in text[-12:]  # the last line is ended (then rich shows the cursor again)
    assert "3/4" in text and "75%" in text and "1 failed" in text  # drawn by rich


# -- run, end to end ------------------------------------------------------------------------


def test_run_against_assistants_emulator(
    prefect_harness: None,
    emulator: AssistantsEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    items: list[dict[str, object]] = [
        {"key": f"k{i:02d}", "message": f"question {i}"} for i in range(20)
    ]
    items[7]["metadata"] = FAIL
    path = write_jsonl(tmp_path / "items.jsonl", items)
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "run",
            str(path),
            "--backend",
            "openai_assistants",
            "--url",
            emulator.base_url,
            "--assistant",
            "asst_cli",
            "--batch-key",
            "cli-emulator",
            "--max-concurrency",
            "8",
            "--timeout",
            "60",
            "--out",
            str(out),
        ]
    )
    assert code == 1
    records = read_jsonl(out)
    assert len(records) == 20
    by_key = {r["key"]: r for r in records}
    assert by_key["k07"]["status"] == "failed" and by_key["k07"]["ok"] is False
    assert by_key["k03"]["text"] == "echo: question 3" and by_key["k03"]["ok"] is True
    assert sum(1 for r in records if r["ok"]) == 19
    err = capsys.readouterr().err
    assert "1 did not complete" in err and "cli-emulator" in err
    # live progress from the running batch: a plain line per 10 % when not on a terminal
    progress = [line for line in err.splitlines() if line.startswith("runs: ")]
    assert len(progress) == 10, progress
    assert progress[0].startswith("runs: 2/20 (10%")
    assert progress[-1].startswith("runs: 20/20 (100%, 1 failed)")


def test_run_from_stdin_to_stdout_with_fail_on_any(
    prefect_harness: None,
    emulator: AssistantsEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = [
        json.dumps({"key": "ok", "message": "fine"}),
        json.dumps({"key": "bad", "message": "boom", "metadata": FAIL}),
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    monkeypatch.setenv("CLI_TEST_KEY", "sk-test-not-a-real-key")
    code = main(
        [
            "run",
            "--backend",
            "openai_assistants",
            "--url",
            emulator.base_url,
            "--api-key-env",
            "CLI_TEST_KEY",
            "--assistant",
            "asst_cli",
            "--fail-on",
            "any",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [(r["key"], r["status"]) for r in records] == [("ok", "completed"), ("bad", "failed")]
    assert "sk-test-not-a-real-key" not in captured.out + captured.err


def test_run_with_saved_block(
    prefect_harness: None,
    emulator: AssistantsEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect_agent_runs import AssistantsCredentials

    AssistantsCredentials(base_url=emulator.base_url, api_key="test").save(
        "cli-test-assistants", overwrite=True
    )
    path = tmp_path / "items.csv"
    path.write_text("key,message\na,one\nb,two\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    argv = ["run", str(path), "--block", "cli-test-assistants", "--assistant", "asst_b"]
    assert main([*argv, "--out", str(out)]) == 0
    assert [r["text"] for r in read_jsonl(out)] == ["echo: one", "echo: two"]
    assert main(["run", str(path), "--block", "no-such-block-xyz", "--assistant", "a"]) == 2
    assert "no credentials block named 'no-such-block-xyz'" in capsys.readouterr().err


@pytest.mark.langgraph
def test_run_against_langgraph(prefect_harness: None, langgraph_url: str, tmp_path: Path) -> None:
    items: list[dict[str, object]] = [
        {"key": "one", "message": "first"},
        {"key": "two", "message": "second", "input": {"sleep_seconds": 0.3}},
        {"key": "bad", "message": "third", "input": {"fail": True}},
    ]
    path = write_jsonl(tmp_path / "items.jsonl", items)
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "run",
            str(path),
            "--backend",
            "langgraph",
            "--url",
            langgraph_url,
            "--assistant",
            "echo",
            "--out",
            str(out),
        ]
    )
    assert code == 1
    by_key = {r["key"]: r for r in read_jsonl(out)}
    assert by_key["one"]["text"] == "echo: first" and by_key["one"]["ok"] is True
    assert by_key["two"]["text"] == "echo: second"
    assert by_key["bad"]["status"] == "failed" and by_key["bad"]["ok"] is False


# -- demo ---------------------------------------------------------------------------------


def test_demo_in_process(prefect_harness: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--items", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["key", "status", "seconds", "reply"]
    rows = out[2:]
    assert len(rows) == 5
    assert all(" completed " in row for row in rows)
    assert "echo: hello from demo item 3" in rows[2]


def demo_in_embedded_mode(tmp_path: Path, items: int, **prefect_env: str) -> Any:
    """The installed ``demo`` command, with a fresh PREFECT_HOME, no Prefect API configured
    and ``prefect_env``; in its own process group (a timeout kills the embedded server too)."""
    assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT} is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), **prefect_env)
    return run(
        [str(CONSOLE_SCRIPT), "demo", "--items", str(items)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_demo_console_script_in_embedded_mode(tmp_path: Path) -> None:
    """The installed command, with a fresh PREFECT_HOME and no Prefect API configured."""
    completed = demo_in_embedded_mode(tmp_path, 8)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("echo:") == 8
    assert "embedded (ephemeral) Prefect server" in completed.stderr
    at = completed.stderr.find("Traceback")
    assert at < 0, completed.stderr[max(0, at - 500) : at + 5000]  # the whole traceback
    # Prefect's log worker sent its logs before the embedded server stopped: it used to
    # retry against the closed port for over a minute after the table was printed
    assert "Error logging to API" not in completed.stderr, completed.stderr[-3000:]
    # Prefect's embedded server (a uvicorn child) stopped with the command
    assert completed.left_behind == {}, completed.left_behind


def test_an_embedded_server_too_slow_to_start_leaves_nothing_behind(tmp_path: Path) -> None:
    """Prefect's first embedded start outlasts its timeout (as its 20 s default does on a
    fresh PREFECT_HOME on a 2-core machine): Prefect falls back, starts a second server over
    the first and loses track of one. The command ends both and says what to do."""
    completed = demo_in_embedded_mode(
        tmp_path, 2, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="3"
    )
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr, completed.stderr[-5000:]
    assert "embedded server did not start in time" in completed.stderr, completed.stderr
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=3" in completed.stderr
    assert completed.left_behind == {}, completed.left_behind


def test_stop_embedded_server_ends_only_prefect_s_embedded_children() -> None:
    """A child marked as Prefect's embedded server (by the variable Prefect starts it with)
    is ended and reaped; any other child of the process is left alone."""
    import subprocess
    from subprocess import PIPE

    from prefect_agent_runs.cli import stop_embedded_server
    from prefect_agent_runs.flows._embedded import embedded_servers

    sleep = [sys.executable, "-c", "print('up', flush=True); import time; time.sleep(120)"]
    children = [
        subprocess.Popen(sleep, env={**os.environ, "PREFECT__SERVER_EPHEMERAL": flag}, stdout=PIPE)
        for flag in ("1", "0")
    ]
    marked, other = children
    try:
        for child in children:  # past exec, with its own environment
            assert child.stdout is not None and child.stdout.readline() == b"up\n"
        stop_embedded_server(keep=embedded_servers())  # the session's harness, if started
        assert marked.poll() is not None  # reaped by stop_embedded_server: no wait needed
        assert other.poll() is None
    finally:
        for child in children:
            child.kill()
            child.communicate()
