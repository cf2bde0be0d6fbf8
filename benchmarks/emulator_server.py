"""The Assistants emulator in its own process, for benchmarks.

``python -m benchmarks.emulator_server --port P --dump stats.json`` serves
:class:`prefect_agent_runs.testing.AssistantsEmulator` (no poll hint, so every client uses
its own poll policy) until SIGTERM, then writes what the server saw: the request count and,
per run, when it was created and when its scripted work ended (wall clock, float seconds:
the emulator's own timestamps are whole seconds).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from typing import Any

from prefect_agent_runs.testing import AssistantsEmulator


def _stats(emu: AssistantsEmulator) -> dict[str, Any]:
    runs = {}
    for run_id, run in list(emu._runs.items()):
        start = run.t0 + run.script.queue_seconds
        end = start + run.script.seconds
        runs[run_id] = {
            "created": run.wall0,
            "ended": run.wall0 + (end - run.t0),
            "status": run.data.get("status"),
        }
    return {"runs": runs}


class _RequestCounter:
    """Counts the emulator's recorded requests and drops them (100,000 runs would keep
    hundreds of MB of records otherwise)."""

    def __init__(self, emu: AssistantsEmulator) -> None:
        self.emu = emu
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        old, self.emu.requests = self.emu.requests, []
        time.sleep(0.2)  # let an append that already looked the old list up land in it
        self.count += len(old)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self._drain()

    def close(self) -> int:
        self._stop.set()
        self._thread.join()
        self._drain()
        return self.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dump", required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # streamed runs take their scripted time, as polled ones do (no compression)
    emu = AssistantsEmulator(
        port=args.port, poll_after_ms=None, run_seconds=1.0, compress_streams=False
    )
    emu.start()
    counter = _RequestCounter(emu)
    print(f"ready {emu.base_url}", flush=True)
    stop.wait()
    stats = _stats(emu)
    stats["requests"] = counter.close()
    with open(args.dump, "w", encoding="utf-8") as out:
        json.dump(stats, out)
    emu.stop()


if __name__ == "__main__":
    main()
