"""Take the documentation's screenshots of the Prefect UI (docs/screenshots/*.png).

A real ``prefect server start`` (with its UI) on a free loopback port, this package's
block types registered, a 60-item ``run_batch`` against the Assistants emulator with 6
scripted failures, then headless Chromium (Debian's ``chromium`` package) on the flow run
page, its artifacts and the blocks catalog::

    apt-get install -y chromium
    python tools/screenshots.py            # writes docs/screenshots/*.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_agent_runs import AssistantsCredentials, RunRequest
from prefect_agent_runs.flows import artifact_keys, run_batch
from prefect_agent_runs.testing import AssistantsEmulator
from prefect_agent_runs.testing.prefect_server import PrefectServer

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def requests(n: int, fail_every: int) -> list[RunRequest]:
    out = []
    for i in range(n):
        script: dict[str, object] = {"seconds": 0.5 + (i % 7) * 0.3}
        if i % fail_every == 3:
            script = {"seconds": 1.0, "outcome": "failed"}
        out.append(
            RunRequest(
                key=f"ticket-{i + 1:03d}",
                assistant_id="asst_triage",
                message=f"Triage support ticket #{i + 1:03d}: the customer cannot log in.",
                metadata={"emulator": json.dumps(script)},
            )
        )
    return out


def shoot(chromium: str, url: str, path: Path, *, height: int = 1100) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size=1600,{height}",
                "--virtual-time-budget=20000",
                f"--screenshot={path}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{path.relative_to(OUT.parents[1])}  <- {url}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--fail-every", type=int, default=10)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    # Block auto-registration off: the catalog shows the block types registered here, this
    # package's, not the 50-odd of Prefect's collections.
    no_auto_blocks = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "false"}
    with (
        PrefectServer(ui=True, server_env=no_auto_blocks) as server,
        AssistantsEmulator(poll_after_ms=200) as emulator,
    ):
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_agent_runs"],
            env=server.env(),
            check=True,
            capture_output=True,
        )
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            # a saved block, as a deployment would use (the ledger records it by name)
            await AssistantsCredentials(base_url=emulator.base_url, api_key="sk-demo").asave(
                "support-desk", overwrite=True
            )
            credentials = await AssistantsCredentials.aload("support-desk")
            batch_key = "support-triage-2026-12-01"
            result = await run_batch(
                credentials,
                requests(args.items, args.fail_every),
                batch_key=batch_key,
                max_concurrency=16,
            )
            print("batch:", dict(result.counts))
            async with get_client() as client:
                artifacts = {
                    a.key: a
                    for a in await client.read_artifacts()
                    if a.key in set(artifact_keys(batch_key).values())
                }
                flow_run_id = next(iter(artifacts.values())).flow_run_id
                task_runs = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
                )
                flow_run = await client.read_flow_run(flow_run_id)
                print("flow run:", flow_run.name, flow_run.tags, flow_run.state)
        keys = artifact_keys(batch_key)
        ui = server.url
        shoot(args.chromium, f"{ui}/runs/flow-run/{flow_run_id}", OUT / "flow-run.png")
        for name in ("table", "summary", "progress"):
            artifact = artifacts.get(keys[name])
            if artifact is not None:
                shoot(
                    args.chromium,
                    f"{ui}/artifacts/artifact/{artifact.id}",
                    OUT / f"artifact-{name}.png",
                    height=1400 if name != "progress" else 700,
                )
        for task_run in task_runs[:1]:  # the batch is one task run: its logs (WARNING per failure)
            shoot(
                args.chromium,
                f"{ui}/runs/task-run/{task_run.id}",
                OUT / "task-run-logs.png",
                height=1400,
            )
        shoot(args.chromium, f"{ui}/blocks/catalog", OUT / "blocks-catalog.png")
        shoot(
            args.chromium,
            f"{ui}/blocks/catalog/agent-run-job/create",
            OUT / "block-agent-run-job.png",
            height=1400,
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
