"""Agent runs inside a data pipeline.

Two flows:

* ``answer_questions_csv`` reads a CSV of questions (columns ``id`` and ``question``, any
  others are kept), fans out with ``run_batch`` (one remote run per row, one Prefect task
  run for the whole batch), joins the answers back onto the rows by key and writes a CSV
  with the added columns ``answer``, ``status`` and ``error``.
* ``answer_one`` chains the single-run tasks: ``create_run`` -> ``wait_for_run`` ->
  ``get_run_result``.

Run it against the bundled Assistants API emulator (no server, no network)::

    python examples/pipeline.py --demo --out answers.csv

or against your own saved credentials block::

    python examples/pipeline.py --block my-assistants --assistant asst_123 \
        --questions questions.csv --out answers.csv

Tested by ``tests/examples/test_pipeline.py``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

from prefect import flow

from prefect_agent_runs import AgentRunsCredentials, AssistantsCredentials, RunRequest
from prefect_agent_runs.flows import run_batch
from prefect_agent_runs.tasks import create_run, get_run_result, wait_for_run

ADDED_COLUMNS = ("answer", "status", "error")


def read_questions(path: Path) -> list[dict[str, str]]:
    """The CSV's rows; every row needs a unique ``id`` and a ``question``."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for number, row in enumerate(rows, start=2):
        if not row.get("id") or not row.get("question"):
            raise ValueError(f"{path}:{number}: every row needs an 'id' and a 'question'")
    return rows


@flow(name="answer-questions-csv")
def answer_questions_csv(
    credentials: AgentRunsCredentials,
    questions_csv: str,
    answers_csv: str,
    assistant_id: str,
    batch_key: str | None = None,
    timeout_seconds: float | None = 600,
    max_concurrency: int = 16,
) -> dict[str, int]:
    """Answer every question of a CSV with one remote run each; write the answers' CSV.

    Only the paths are flow-run parameters: the rows are read inside the flow.

    Returns:
        The outcome counts by status, e.g. ``{"completed": 9, "failed": 1}``.
    """
    rows = read_questions(Path(questions_csv))
    requests = [
        RunRequest(key=row["id"], assistant_id=assistant_id, message=row["question"])
        for row in rows
    ]
    result = run_batch(
        credentials,
        requests,
        batch_key=batch_key,
        timeout_seconds=timeout_seconds,
        max_concurrency=max_concurrency,
    )
    by_key = {record["key"]: record for record in result.to_records()}
    columns = list(rows[0]) if rows else ["id", "question"]
    columns += [c for c in ADDED_COLUMNS if c not in columns]
    with Path(answers_csv).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            record = by_key[row["id"]]
            writer.writerow(
                {
                    **row,
                    "answer": record["text"] or "",
                    "status": record["status"],
                    "error": record["error"] or "",
                }
            )
    return dict(result.counts)


# --8<-- [start:chain]
@flow(name="answer-one")
def answer_one(
    credentials: AgentRunsCredentials,
    question: str,
    assistant_id: str,
    timeout_seconds: float = 600,
) -> str:
    """One remote run as three pipeline steps: create, wait (cancels on timeout), read."""
    run = create_run(credentials, RunRequest(assistant_id=assistant_id, message=question))
    run = wait_for_run(credentials, run, timeout_seconds=timeout_seconds)
    return get_run_result(credentials, run).text or ""


# --8<-- [end:chain]


def _demo(out: Path) -> int:
    """Both flows against the bundled emulator, from a generated CSV of five questions."""
    from prefect_agent_runs.testing import AssistantsEmulator

    questions = Path(tempfile.mkdtemp()) / "questions.csv"
    with questions.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "question", "topic"])
        for i, topic in enumerate(["sales", "support", "ops", "billing", "hiring"]):
            writer.writerow([f"q{i}", f"What changed in {topic} this week?", topic])
    with AssistantsEmulator(run_seconds=0.1) as emulator:
        credentials = AssistantsCredentials(base_url=emulator.base_url, api_key="demo")
        counts = answer_questions_csv(credentials, str(questions), str(out), "asst_demo")
        reply = answer_one(credentials, "Is the pipeline working?", "asst_demo")
    print(f"answers written to {out}: {counts}")
    print(f"answer_one: {reply!r}")
    return 0 if counts.get("completed") == 5 and reply == "echo: Is the pipeline working?" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="run against the bundled emulator")
    parser.add_argument("--block", help="a saved AssistantsCredentials block, by name")
    parser.add_argument("--assistant", help="the assistant id")
    parser.add_argument("--questions", type=Path, help="the questions' CSV (id, question)")
    parser.add_argument("--out", type=Path, default=Path("answers.csv"), help="answers' CSV")
    args = parser.parse_args(argv)
    if args.demo:
        return _demo(args.out)
    if not (args.block and args.assistant and args.questions):
        parser.error("give --demo, or --block, --assistant and --questions")
    credentials = AssistantsCredentials.load(args.block)
    counts = answer_questions_csv(credentials, str(args.questions), str(args.out), args.assistant)
    print(f"answers written to {args.out}: {counts}")
    return 0 if set(counts) <= {"completed"} else 1


if __name__ == "__main__":
    sys.exit(main())
