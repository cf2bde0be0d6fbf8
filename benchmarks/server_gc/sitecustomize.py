"""Records the LangGraph dev server's own garbage-collection pauses (benchmarks only).

benchmarks/run.py puts this folder on the server's ``PYTHONPATH`` and names a file in
``BENCH_SERVER_GC_LOG``; Python imports ``sitecustomize`` at start-up, and this one
installs ``gcclock.GcClock``, which appends each collection of 5 ms or more to that file.
While a collection runs, the server's event loop answers nothing and sets no run's
status, so these pauses bound the detection lag any client can reach.

A ``sitecustomize`` further down ``sys.path`` (the environment's own), which this one
shadows, is run after it.
"""

import gc
import importlib.machinery
import importlib.util
import os
import sys

from gcclock import GcClock

_LOG = os.environ.get("BENCH_SERVER_GC_LOG")
if _LOG:
    gc.callbacks.append(GcClock(log=_LOG))


def _run_the_shadowed_one() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_run_the_shadowed_one()
