"""examples/notebook.ipynb, executed headless with nbclient in a real kernel against the
Assistants emulator: a batch awaited in a cell (a running event loop), live progress,
records, and a DataFrame (pandas is a test dependency)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from prefect_agent_runs.models import METADATA_BATCH_KEY
from prefect_agent_runs.testing import AssistantsEmulator

from .conftest import EXAMPLES

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def emulator() -> Iterator[AssistantsEmulator]:
    with AssistantsEmulator(run_seconds=0.05, poll_after_ms=20) as emu:
        yield emu


def texts(cell: Any) -> str:
    """Everything a cell showed: streams, results, displays and their updates."""
    out = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            out.append(output["text"])
        elif "data" in output:
            out.append(output["data"].get("text/plain", ""))
            out.append(output["data"].get("text/html", ""))
    return "\n".join(out)


def test_the_notebook_runs_a_batch_from_a_cell(
    emulator: AssistantsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    # the kernel is another process: give it the test's emulator and Prefect API
    monkeypatch.setenv("AGENT_RUNS_BASE_URL", emulator.base_url)
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=180, kernel_name="python3")
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails

    code = [c for c in notebook.cells if c.cell_type == "code"]
    shown = [texts(c) for c in code]
    # the batch cell: the progress line was updated to the end, and the counts
    batch_cell = next(i for i, c in enumerate(code) if "await run_batch" in c.source)
    assert "{'completed': 23, 'failed': 1}" in shown[batch_cell]
    assert "24/24 finished (23 completed, 1 failed)" in shown[batch_cell]
    # records
    assert "'text': 'echo: What is 1 squared?'" in "\n".join(shown)
    # the DataFrame (rendered as HTML and as text) and its value counts
    frame_cell = next(i for i, c in enumerate(code) if "pd.DataFrame" in c.source)
    assert "<table" in shown[frame_cell] and "seconds_running" in shown[frame_cell]
    assert "{'completed': 23, 'failed': 1}" in shown[frame_cell]
    # the failed item, with its reason
    assert "q03 failed - " in shown[-1] and "scripted to fail" in shown[-1]

    runs = emulator.runs()
    assert len(runs) == 24
    assert len({r["metadata"][METADATA_BATCH_KEY] for r in runs}) == 1
    assert sorted(r["status"] for r in runs).count("failed") == 1
