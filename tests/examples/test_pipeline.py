"""examples/pipeline.py: a CSV of questions fanned out with run_batch and joined back, and
the create_run -> wait_for_run -> get_run_result chain, against the Assistants emulator."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_agent_runs import AssistantsCredentials
from prefect_agent_runs.models import METADATA_BATCH_KEY
from prefect_agent_runs.testing import AssistantsEmulator

from .conftest import load_example

pytestmark = pytest.mark.usefixtures("prefect_harness")

pipeline = load_example("pipeline")


@pytest.fixture
def emulator() -> Iterator[AssistantsEmulator]:
    with AssistantsEmulator(run_seconds=0.05, poll_after_ms=20) as emu:
        yield emu


def write_questions(path: Path, n: int) -> list[dict[str, str]]:
    rows = [
        {"id": f"q{i}", "question": f"question number {i}?", "owner": f"team-{i % 3}"}
        for i in range(n)
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "question", "owner"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_in_answers_joined_back_csv_out_and_a_rerun_starts_nothing(
    emulator: AssistantsEmulator, tmp_path: Path
) -> None:
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test")
    rows = write_questions(tmp_path / "questions.csv", 12)
    out = tmp_path / "answers.csv"
    batch_key = f"pipeline-{uuid.uuid4().hex[:8]}"

    counts = pipeline.answer_questions_csv(
        credentials, str(tmp_path / "questions.csv"), str(out), "asst_1", batch_key=batch_key
    )

    assert counts == {"completed": 12}
    answers = read_csv(out)
    assert list(answers[0]) == ["id", "question", "owner", "answer", "status", "error"]
    assert [a["id"] for a in answers] == [r["id"] for r in rows]  # the input's order
    for row, answer in zip(rows, answers, strict=True):
        assert answer["owner"] == row["owner"]  # other columns are kept
        assert answer["answer"] == f"echo: {row['question']}"
        assert answer["status"] == "completed" and answer["error"] == ""
    runs = [r for r in emulator.runs() if r["metadata"].get(METADATA_BATCH_KEY) == batch_key]
    assert len(runs) == 12

    # the same batch key again: every row re-attaches to its run, none is started twice
    out.unlink()
    counts = pipeline.answer_questions_csv(
        credentials, str(tmp_path / "questions.csv"), str(out), "asst_1", batch_key=batch_key
    )
    assert counts == {"completed": 12}
    assert len(emulator.runs()) == 12
    assert [a["answer"] for a in read_csv(out)] == [f"echo: {r['question']}" for r in rows]


def test_failed_rows_get_their_status_and_error(tmp_path: Path) -> None:
    with AssistantsEmulator(run_seconds=0.05, poll_after_ms=20, outcome="failed") as emulator:
        credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test")
        write_questions(tmp_path / "questions.csv", 3)
        counts = pipeline.answer_questions_csv(
            credentials, str(tmp_path / "questions.csv"), str(tmp_path / "a.csv"), "asst_1"
        )
    assert counts == {"failed": 3}
    for answer in read_csv(tmp_path / "a.csv"):
        assert answer["status"] == "failed" and answer["answer"] == ""
        assert "scripted to fail" in answer["error"]


def test_a_row_without_a_question_is_refused_before_any_run(
    emulator: AssistantsEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "questions.csv"
    path.write_text("id,question\nq1,hello?\nq2,\n", encoding="utf-8")
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test")
    with pytest.raises(ValueError, match=r"questions.csv:3: every row needs"):
        pipeline.answer_questions_csv(credentials, str(path), str(tmp_path / "a.csv"), "asst_1")
    assert emulator.runs() == []


def test_create_wait_result_chain(emulator: AssistantsEmulator) -> None:
    credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="sk-test")
    answer = pipeline.answer_one(credentials, "Is the chain working?", "asst_1")
    assert answer == "echo: Is the chain working?"
    (run,) = emulator.runs()
    assert run["status"] == "completed" and run["assistant_id"] == "asst_1"
