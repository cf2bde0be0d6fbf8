"""Records the LangGraph dev server's own garbage-collection pauses (benchmarks only).

benchmarks/run.py puts this folder on the server's ``PYTHONPATH`` and names a file in
``BENCH_SERVER_GC_LOG``; Python imports ``sitecustomize`` at start-up, and each collection
of 5 ms or more is appended there as ``<unix time> <generation> <ms>``. While a
collection runs, the server's event loop answers nothing and sets no run's status, so
these pauses bound the detection lag any client can reach. The cost: two clock reads per
collection.
"""

import gc
import os
import time

_LOG = os.environ.get("BENCH_SERVER_GC_LOG")
_began = [0.0]


def _clock(phase: str, info: dict) -> None:
    if phase == "start":
        _began[0] = time.perf_counter()
        return
    ms = 1000 * (time.perf_counter() - _began[0])
    if ms >= 5 and _LOG:
        with open(_LOG, "a", encoding="utf-8") as log:
            log.write(f"{time.time():.3f} {info['generation']} {ms:.1f}\n")


if _LOG:
    gc.callbacks.append(_clock)
