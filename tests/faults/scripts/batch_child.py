"""Run ``run_batch`` in its own process, for the crash and cancellation tests.

Usage: python batch_child.py CONFIG_JSON
       python batch_child.py --zygote

With ``--zygote`` it imports everything once, prints ``READY``, then for each line
``CONFIG_JSON<TAB>LOG_PATH`` on stdin forks a child that runs that batch (output to
LOG_PATH) and prints ``PID <pid>``: ten batches cost one interpreter start, not ten
(importing Prefect takes seconds on a loaded machine). The children are reaped by the
kernel (SIGCHLD ignored in the zygote).

CONFIG_JSON keys: ``backend`` (``langgraph`` or ``openai_assistants``), ``base_url``,
``batch_key``, ``n``, ``sleep`` (LangGraph: seconds each run sleeps; Assistants: the
emulator script's seconds), ``max_concurrency``, optional ``max_active_runs``,
``timeout_seconds``, ``api_key_env`` (Assistants: the variable holding the key),
``hog_loop`` (seconds: the main thread's event loops spend that long in a plain callback,
every few milliseconds, so that a signal mostly lands inside a callback, where ``asyncio``
would swallow Prefect's ``TerminationSignal``), ``wait`` (true: instead of a batch, a flow
that creates one run with the ``acreate_run`` task and waits for it with ``await_for_run``
(async: on the main thread's event loop, where ``hog_loop`` acts);
its thread carries the batch key's metadata, so the tests find it the same way).

The Prefect API and the result storage come from the environment. Prints ``STARTED``
when the batch begins and ``DONE <json counts>`` at the end.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pydantic import SecretStr

from prefect_agent_runs import AssistantsCredentials, LangGraphCredentials
from prefect_agent_runs.flows import run_batch


def items(config: dict[str, Any]) -> list[dict[str, Any]]:
    n, sleep = int(config["n"]), float(config.get("sleep", 0.0))
    if config["backend"] == "langgraph":
        return [
            {
                "key": f"item-{i}",
                "assistant_id": "echo",
                "input": {
                    "messages": [{"role": "user", "content": f"q{i}"}],
                    "sleep_seconds": sleep,
                },
            }
            for i in range(n)
        ]
    return [
        {
            "key": f"item-{i}",
            "assistant_id": "asst_echo",
            "message": f"q{i}",
            "metadata": {"emulator": json.dumps({"seconds": sleep})},
        }
        for i in range(n)
    ]


def credentials(config: dict[str, Any]) -> Any:
    if config["backend"] == "langgraph":
        return LangGraphCredentials(base_url=config["base_url"])
    key = os.environ[config.get("api_key_env", "CRASH_TEST_API_KEY")]
    return AssistantsCredentials(base_url=config["base_url"], api_key=SecretStr(key))


def hog_main_thread_loops(seconds: float) -> None:
    """Every event loop the main thread makes from now on blocks in a callback most of
    the time (``time.sleep`` in a timer callback: a signal then runs its handler there)."""
    import asyncio
    import threading
    import time

    def hog(loop: asyncio.AbstractEventLoop) -> None:
        time.sleep(seconds)
        loop.call_later(seconds / 10, hog, loop)

    class Hogging(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            loop = super().new_event_loop()
            if threading.current_thread() is threading.main_thread():
                loop.call_soon(hog, loop)
            return loop

    asyncio.set_event_loop_policy(Hogging())


def wait_for_one(config: dict[str, Any]) -> None:
    """An async flow that creates one run and waits for it in an ``await_for_run`` task."""
    import asyncio

    from prefect import flow

    from prefect_agent_runs import RunRequest
    from prefect_agent_runs.models import METADATA_BATCH_KEY
    from prefect_agent_runs.tasks import acreate_run, await_for_run

    creds = credentials(config)
    request = RunRequest(**items(config)[0], metadata={METADATA_BATCH_KEY: config["batch_key"]})

    @flow(name="wait-child")
    async def create_and_wait() -> str:
        run = await acreate_run(creds, request)
        return (await await_for_run(creds, run)).status.value

    print("DONE", json.dumps({asyncio.run(create_and_wait()): 1}), flush=True)


def run(config: dict[str, Any]) -> None:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the tests' "where are you?"
    if config.get("hog_loop"):
        hog_main_thread_loops(float(config["hog_loop"]))
    print("STARTED", flush=True)
    if config.get("wait"):
        wait_for_one(config)
        return
    kwargs: dict[str, Any] = {}
    if "max_active_runs" in config:
        kwargs["max_active_runs"] = config["max_active_runs"]
    result = run_batch(
        credentials(config),
        items(config),
        batch_key=config["batch_key"],
        max_concurrency=int(config.get("max_concurrency", 8)),
        timeout_seconds=config.get("timeout_seconds"),
        **kwargs,
    )
    print("DONE", json.dumps(result.counts), flush=True)


def zygote() -> None:
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # no zombies: the kernel reaps
    print("READY", flush=True)
    for line in sys.stdin:
        config_json, log_path = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            code = 0
            try:
                run(json.loads(config_json))
            except BaseException as exc:
                import traceback

                traceback.print_exception(exc)
                print("FAILED", repr(exc), flush=True)
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        print("PID", pid, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--zygote":
        zygote()
    else:
        run(json.loads(sys.argv[1]))
