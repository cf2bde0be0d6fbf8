"""One clock for CPython's cyclic garbage collections, for the client and the server.

``GcClock`` is a ``gc.callbacks`` hook: it sums the seconds spent in collections, counts
the full ones (generation 2) and, given a log path, appends each collection of
``log_from_ms`` or more as ``<unix time> <generation> <ms>``. The benchmark's contenders
use it in their own process (``benchmarks/contenders.py``), and ``sitecustomize.py`` next to
it installs it in the LangGraph dev server. Standard library only: the server imports it
from this folder alone. The cost: two clock reads per collection.
"""

from __future__ import annotations

import time
from typing import Any


class GcClock:
    """Seconds spent in cyclic collections, how many were full, and a log of the long ones.

    Args:
        log: A file to append each collection of ``log_from_ms`` or more to (None: no log).
        log_from_ms: The shortest collection written to ``log``.
    """

    def __init__(self, log: str | None = None, log_from_ms: float = 5.0) -> None:
        self.seconds = 0.0
        self.full = 0
        self.log = log
        self.log_from_ms = log_from_ms
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        if not self._began:  # hooked in while a collection ran (another thread's): no start
            return
        took, self._began = time.perf_counter() - self._began, 0.0
        self.seconds += took
        self.full += info["generation"] == 2
        if self.log and 1000 * took >= self.log_from_ms:
            with open(self.log, "a", encoding="utf-8") as out:
                out.write(f"{time.time():.3f} {info['generation']} {1000 * took:.1f}\n")
