"""The benchmark's own measuring parts: the GC clock on both sides, the lag's two parts.

``benchmarks/`` is not run in CI (it takes an hour); these check the pieces whose error
would silently skew its tables.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.run import _figures
from benchmarks.server_gc.gcclock import GcClock

SERVER_GC = Path(__file__).resolve().parents[2] / "benchmarks" / "server_gc"


def test_the_gc_clock_counts_full_collections_and_their_time() -> None:
    clock = GcClock()
    garbage = [[i] for i in range(200_000)]
    gc.callbacks.append(clock)
    try:
        gc.collect()
        gc.collect()
    finally:
        gc.callbacks.remove(clock)
    del garbage
    assert clock.full == 2
    assert clock.seconds > 0


def test_the_gc_clock_skips_a_collection_it_saw_only_end() -> None:
    """Hooked in while another thread's collection ran, the clock sees its stop alone: that
    counted the seconds since boot once (15,940 s in a benchmark row)."""
    clock = GcClock()
    clock("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert (clock.seconds, clock.full) == (0.0, 0)
    clock("start", {"generation": 0})
    clock("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    assert 0 < clock.seconds < 1 and clock.full == 0


def test_the_servers_hook_logs_long_collections_and_runs_the_sitecustomize_it_shadows(
    tmp_path: Path,
) -> None:
    """The server's ``sitecustomize`` writes ``<time> <generation> <ms>`` per collection of
    5 ms or more, and the environment's own ``sitecustomize`` still runs."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("print('the shadowed sitecustomize ran')\n")
    log = tmp_path / "gc.log"
    env = dict(os.environ, BENCH_SERVER_GC_LOG=str(log))
    env["PYTHONPATH"] = os.pathsep.join([str(SERVER_GC), str(other)])
    code = "import gc\nkept = [[i] for i in range(1_500_000)]\nfor _ in range(3): gc.collect()\n"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "the shadowed sitecustomize ran" in out.stdout
    rows = [line.split() for line in log.read_text().splitlines()]
    assert len(rows) >= 3, rows
    assert all(len(row) == 3 and row[1] == "2" and float(row[2]) >= 5 for row in rows[-3:])


def test_the_lag_is_split_into_the_servers_part_and_ours() -> None:
    """Run r ends at 10.0 on the server, becomes visible at 10.1, is seen at 10.25."""
    ends = {f"r{i}": (0.0, 10.0 + i) for i in range(4)}
    visible = {f"r{i}": 10.1 + i for i in range(4)}
    seen = {f"r{i}": 10.25 + i for i in range(3)}  # r3 was never seen: not in the lag
    result = {"n": 4, "seen": seen, "wall": 14.0, "requests": 6, "client_cpu": 0.5}
    result.update(peak_rss_mb=100.0)
    figures = _figures(result, ends, server_cpu=0.04, other_cpu=0.0, visible=visible)
    assert round(figures["lag_p99_ms"]) == 250
    assert round(figures["visible_p99_ms"]) == 100
    assert round(figures["after_visible_p99_ms"]) == 150
    assert figures["matched"] == 3 and figures["requests_per_run"] == 1.5
    assert figures["server_cpu_ms_per_run"] == 10.0
    assert figures["client_gc_per_1000"] is None  # no GC figure in the result: none shown


def test_a_contender_s_peak_rss_is_its_own_not_its_parent_s() -> None:
    """Linux carries ``ru_maxrss`` across ``execve``: a contender started by a 300 MB runner
    reported 300 MB. Every row of the 7fd9d14 run showed the runner's ~195 MB."""
    script = (
        "import subprocess, sys\n"
        "ballast = bytearray(300 * 2**20)\n"
        "for i in range(0, len(ballast), 4096):\n"
        "    ballast[i] = 1\n"
        "code = 'from benchmarks.contenders import peak_rss_mb; print(peak_rss_mb())'\n"
        "print(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,"
        " check=True).stdout)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    child_mb = float(out.stdout.strip())
    assert 5 < child_mb < 150, child_mb  # python + httpx + the GC clock: ~35 MB
