"""Benchmarks: run_batch, the engine, the official SDK scripts and two common recipes.

One command (from the repository root, with the ``bench`` and ``langgraph`` extras)::

    python -m benchmarks            # the full set (about an hour on 2 cores)
    python -m benchmarks --quick    # 1 round, small N (a few minutes, for development)

Workloads:

* ``langgraph``: the real Agent Server (``langgraph dev --n-jobs-per-worker 64``),
  1,000 runs of 1 s, 64 creates in flight, each contender on a freshly started server in a
  fresh folder; rounds alternate the contenders (A B C A B C ...), medians are reported.
* ``langgraph-10k``: servers that already hold 10,000 earlier threads (a fresh copy of one
  prefilled state folder for every contender and round; ``--big-rounds`` rounds, alternating).
* ``assistants``: the Assistants emulator in its own process, runs of 0.5-2 s (scripted per
  run, the same for every contender), 256 creates in flight, at 1,000 / 10,000 / 100,000.

Each contender runs in its own process (benchmarks/contenders.py), so client CPU and peak
RSS are its own. Prints one table, writes benchmarks/RESULTS.md and benchmarks/results.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import psutil

from prefect_agent_runs.testing import LangGraphDevServer
from prefect_agent_runs.testing._ports import find_free_port
from prefect_agent_runs.testing.prefect_server import PrefectServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONTENDERS = ("run_batch", "run_batch_temp", "engine", "sdk", "poll2s", "task_per_poll")
LABELS = {
    "run_batch": "run_batch (results collected)",
    "run_batch_temp": "run_batch on Prefect's temporary server (default settings)",
    "engine": "engine alone (run_items)",
    "sdk": "official SDK script",
    "poll2s": "seed 003 recipe (GET every 2 s)",
    "task_per_poll": "task per run + task per poll (prefect-dbt)",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RUN_END = re.compile(
    r"Background run (?:succeeded|failed|interrupted|timed out)\b.*?"
    r"run_created_at=(\S+).*?run_ended_at=(\S+).*?run_id=(\S+)"
)
_THREAD_ID = re.compile(r"thread_id=(\S+)")


@dataclass
class Row:
    workload: str
    contender: str
    n: int
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def median(self, name: str) -> float | None:
        values = [r[name] for r in self.rounds if r.get(name) is not None]
        return statistics.median(values) if values else None


def _iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _cpu(pid: int) -> float:
    """CPU seconds of a process and its children."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
    except psutil.Error:
        return 0.0
    return total


def _busy_cpu() -> float:
    t = psutil.cpu_times()
    return (
        t.user
        + t.system
        + getattr(t, "nice", 0.0)
        + getattr(t, "irq", 0.0)
        + getattr(t, "softirq", 0.0)
    )


OWN_PREFECT_SERVER = ("run_batch", "task_per_poll")
"""Contenders whose flow runs talk to a ``prefect server start`` of their own, as deployed
flows do (a fresh one per round). ``run_batch_temp`` takes Prefect's default instead: a
temporary server started by the flow run's process, which imports Prefect's whole server
into that process (83 MB of RSS, measured)."""


def _run_contender(
    backend: str, contender: str, url: str, n: int, concurrency: int, sleep: float, workdir: Path
) -> dict[str, Any]:
    if contender not in OWN_PREFECT_SERVER:
        return _run_contender_process(backend, contender, url, n, concurrency, sleep, workdir)
    with PrefectServer(home=workdir / "prefect-server") as prefect:
        assert prefect.pid is not None
        cpu0 = _cpu(prefect.pid)
        result = _run_contender_process(
            backend, contender, url, n, concurrency, sleep, workdir, prefect.api_url
        )
        result["prefect_server_cpu"] = _cpu(prefect.pid) - cpu0
    return result


def _run_contender_process(
    backend: str,
    contender: str,
    url: str,
    n: int,
    concurrency: int,
    sleep: float,
    workdir: Path,
    prefect_api_url: str | None = None,
) -> dict[str, Any]:
    out = workdir / f"{contender}.json"
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "PREFECT_HOME": str(workdir / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # the temporary server needs longer than the default 20 s on a loaded 2-core box
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "INFO"),
        }
    )
    env.pop("PREFECT_API_URL", None)
    if prefect_api_url is not None:
        env["PREFECT_API_URL"] = prefect_api_url
    command = [
        sys.executable,
        "-m",
        "benchmarks.contenders",
        "--backend",
        backend,
        "--contender",
        contender,
        "--url",
        url,
        "--n",
        str(n),
        "--concurrency",
        str(concurrency),
        "--sleep",
        str(sleep),
        "--out",
        str(out),
    ]
    log = workdir / f"{contender}.log"
    with open(log, "wb") as sink:
        code = subprocess.call(command, cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT)
    if code != 0 or not out.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{backend} {contender} failed (exit {code}):\n{tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def _figures(
    result: dict[str, Any],
    ends: dict[str, tuple[float, float]],
    server_cpu: float,
    other_cpu: float,
    visible: dict[str, float] | None = None,
) -> dict[str, Any]:
    n = result["n"]
    seen: dict[str, float] = result["seen"]
    mine = {rid: ends[rid] for rid in seen if rid in ends}
    lags = [seen[rid] - end for rid, (_, end) in mine.items()]
    # the server's own part of the lag: its end -> the end becomes visible to any client
    shown = {rid: visible[rid] for rid in mine if rid in visible} if visible else {}
    floor = [at - mine[rid][1] for rid, at in shown.items()]
    after = [seen[rid] - at for rid, at in shown.items()]
    makespan = (
        max(end for _, end in mine.values()) - min(c for c, _ in mine.values()) if mine else None
    )
    return {
        "wall": result["wall"],
        "wall_over_makespan": result["wall"] / makespan if makespan else None,
        "requests_per_run": result["requests"] / n,
        "server_cpu_ms_per_run": 1000 * server_cpu / n,
        "lag_p50_ms": _ms(_percentile(lags, 0.5)),
        "lag_p99_ms": _ms(_percentile(lags, 0.99)),
        "visible_p99_ms": _ms(_percentile(floor, 0.99)),
        "after_visible_p99_ms": _ms(_percentile(after, 0.99)),
        "client_cpu_per_1000": 1000 * result["client_cpu"] / n,
        "client_gc_per_1000": (1000 * result["gc_seconds"] / n if "gc_seconds" in result else None),
        "prefect_server_cpu_per_1000": (
            1000 * result["prefect_server_cpu"] / n if "prefect_server_cpu" in result else None
        ),
        "peak_rss_mb": result["peak_rss_mb"],
        "prefect_logs": result.get("prefect_logs"),
        "prefect_task_runs": result.get("prefect_task_runs"),
        "prefect_cold_start": result.get("prefect_cold_start"),
        "seen": len(seen),
        "matched": len(mine),
        "errors": result.get("errors") or [],
        "other_cpu_pct": other_cpu,
    }


# -- LangGraph ------------------------------------------------------------------------------


def _langgraph_ends(server: LangGraphDevServer) -> dict[str, tuple[float, float]]:
    """Each run's (created, ended) from the server's own log lines."""
    assert server.log_path is not None
    ends = {}
    for line in _ANSI.sub("", server.log_path.read_text(errors="replace")).splitlines():
        match = _RUN_END.search(line)
        if match:
            ends[match.group(3)] = (_iso(match.group(1)), _iso(match.group(2)))
    return ends


def _langgraph_visible(
    server: LangGraphDevServer, ends: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """When each run's end became visible to clients: its thread's last ``updated_at``.

    The dev server sets the run's status and its thread's status (and ``updated_at``) in one
    step after the run's ``run_ended_at``; a join, a run GET and a thread search all learn
    of the end from that step on. Read after the round (the threads are not touched since).
    """
    assert server.log_path is not None
    thread_of = {}
    for line in _ANSI.sub("", server.log_path.read_text(errors="replace")).splitlines():
        end, thread = _RUN_END.search(line), _THREAD_ID.search(line)
        if end and thread and end.group(3) in ends:
            thread_of[end.group(3)] = thread.group(1)
    wanted = set(thread_of.values())
    updated: dict[str, float] = {}
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        offset = 0
        while True:
            page = http.post(
                "/threads/search",
                json={"limit": 1000, "offset": offset, "select": ["thread_id", "updated_at"]},
            ).json()
            updated.update(
                (t["thread_id"], _iso(t["updated_at"])) for t in page if t["thread_id"] in wanted
            )
            if len(page) < 1000 or len(updated) == len(wanted):
                break
            offset += len(page)
    return {rid: updated[tid] for rid, tid in thread_of.items() if tid in updated}


def _server_gc(log: Path, start: float, end: float) -> dict[str, Any]:
    """The server's garbage-collection pauses while the contender ran."""
    pauses = []
    if log.exists():
        for line in log.read_text().splitlines():
            at, _, ms = line.split()
            if start <= float(at) <= end:
                pauses.append(float(ms))
    return {
        "server_gc_pauses_50ms": sum(ms >= 50 for ms in pauses),
        "server_gc_max_ms": max(pauses, default=0.0),
    }


def _langgraph_round(
    contender: str, n: int, sleep: float, concurrency: int, template: Path | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-lg-") as tmp:
        work = Path(tmp)
        state = work / "server"
        if template is not None:
            shutil.copytree(template, state)
        gc_log = work / "server-gc.log"
        gc_env = {"PYTHONPATH": str(HERE / "server_gc"), "BENCH_SERVER_GC_LOG": str(gc_log)}
        with LangGraphDevServer(n_jobs_per_worker=64, workdir=state, env=gc_env) as server:
            assert server.pid is not None
            cpu0, busy0, t0 = _cpu(server.pid), _busy_cpu(), time.perf_counter()
            result = _run_contender(
                "langgraph", contender, server.base_url, n, concurrency, sleep, work
            )
            server_cpu = _cpu(server.pid) - cpu0
            elapsed, busy = time.perf_counter() - t0, _busy_cpu() - busy0
            ends = _langgraph_ends(server)
            visible = _langgraph_visible(server, ends)
        own = server_cpu + result["client_cpu"] + result.get("prefect_server_cpu", 0.0)
        other = 100 * max(0.0, busy - own) / (elapsed * psutil.cpu_count())
        figures = _figures(result, ends, server_cpu, other, visible)
        figures.update(_server_gc(gc_log, result["started"], result["started"] + result["wall"]))
        return figures


def _prefill(template: Path, threads: int) -> float:
    """A server state folder holding ``threads`` finished threads (runs of 0 s)."""
    started = time.perf_counter()
    with LangGraphDevServer(n_jobs_per_worker=64, workdir=template) as server:
        http = httpx.Client(base_url=server.base_url, timeout=120)
        chunk = 100
        for at in range(0, threads, chunk):
            payload = [
                {
                    "assistant_id": "echo",
                    "input": {"messages": [{"role": "user", "content": f"earlier {i}"}]},
                    "metadata": {"bench_prefill": "1"},
                    "on_completion": "keep",
                }
                for i in range(at, min(threads, at + chunk))
            ]
            http.post("/runs/batch", json=payload).raise_for_status()
            while http.post("/threads/count", json={"status": "busy"}).json() > 2 * chunk:
                time.sleep(0.2)
        while http.post("/threads/count", json={"status": "busy"}).json() > 0:
            time.sleep(0.5)
        held = http.post("/threads/count", json={}).json()
        print(f"prefilled {held} threads in {time.perf_counter() - started:.0f} s", flush=True)
    return time.perf_counter() - started


# -- Assistants emulator ----------------------------------------------------------------------


@contextmanager
def _emulator(work: Path) -> Iterator[tuple[str, int, Path]]:
    port = find_free_port()
    dump = work / "emulator.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.emulator_server",
            "--port",
            str(port),
            "--dump",
            str(dump),
        ],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield line.split()[1], proc.pid, dump
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def _assistants_round(contender: str, n: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-emu-") as tmp:
        work = Path(tmp)
        with _emulator(work) as (url, pid, dump):
            cpu0, busy0, t0 = _cpu(pid), _busy_cpu(), time.perf_counter()
            result = _run_contender("assistants", contender, url, n, concurrency, 0.0, work)
            server_cpu = _cpu(pid) - cpu0
            elapsed, busy = time.perf_counter() - t0, _busy_cpu() - busy0
        stats = json.loads(dump.read_text())
        ends = {rid: (r["created"], r["ended"]) for rid, r in stats["runs"].items()}
        own = server_cpu + result["client_cpu"] + result.get("prefect_server_cpu", 0.0)
        other = 100 * max(0.0, busy - own) / (elapsed * psutil.cpu_count())
        figures = _figures(result, ends, server_cpu, other)
        # counted at the server: the openai SDK's requests do not pass httpx.AsyncClient.send
        figures["client_requests_per_run"] = figures["requests_per_run"]
        figures["requests_per_run"] = stats["requests"] / n
        return figures


# -- report -----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


COLUMNS = [
    ("wall s", "wall", 1),
    ("wall / server makespan", "wall_over_makespan", 2),
    ("requests / run", "requests_per_run", 2),
    ("server CPU ms / run", "server_cpu_ms_per_run", 1),
    ("lag p50 ms", "lag_p50_ms", 0),
    ("lag p99 ms", "lag_p99_ms", 0),
    ("server's end -> visible p99 ms", "visible_p99_ms", 0),
    ("visible -> seen p99 ms", "after_visible_p99_ms", 0),
    ("server GC pauses >= 50 ms", "server_gc_pauses_50ms", 0),
    ("server's longest GC pause ms", "server_gc_max_ms", 0),
    ("client CPU s / 1,000 runs", "client_cpu_per_1000", 1),
    ("of which GC s / 1,000", "client_gc_per_1000", 2),
    ("Prefect server CPU s / 1,000", "prefect_server_cpu_per_1000", 1),
    ("peak RSS MB", "peak_rss_mb", 0),
    ("Prefect log records", "prefect_logs", 0),
    ("Prefect task runs", "prefect_task_runs", 0),
    ("other load %", "other_cpu_pct", 0),
]


def table(rows: list[Row]) -> str:
    head = ["workload", "contender", "N", "rounds", *(c[0] for c in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            row.workload,
            LABELS.get(row.contender, row.contender),
            f"{row.n:,}",
            str(len(row.rounds)),
        ]
        cells += [_fmt(row.median(key), digits) for _, key, digits in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    for temporary, where in ((False, "a Prefect server of its own"), (True, "temporary server")):
        cold = [
            r["prefect_cold_start"]
            for row in rows
            if (row.contender not in OWN_PREFECT_SERVER) == temporary
            for r in row.rounds
            if r.get("prefect_cold_start")
        ]
        if cold:
            lines.append(
                f"| Prefect cold start (first flow run, {where}) | | | {len(cold)} | "
                f"{_fmt(statistics.median(cold))} |" + " |" * (len(COLUMNS) - 1)
            )
    return "\n".join(lines)


def _versions() -> str:
    names = [
        "prefect",
        "langgraph-api",
        "langgraph-runtime-inmem",
        "langgraph-sdk",
        "openai",
        "httpx",
        "httpcore",
    ]
    out = []
    for name in names:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(out)


def _machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return f"{platform.system()} {platform.release()}, {psutil.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


def _commit() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_wall, ax_req) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        series.setdefault((row.workload, row.contender), []).append(row)
    for (workload, contender), group in sorted(series.items()):
        group.sort(key=lambda r: r.n)
        xs = [r.n for r in group]
        style = "o-" if workload.startswith("assistants") else "s--"
        label = f"{workload}: {contender}"
        ax_wall.plot(xs, [r.median("wall") for r in group], style, label=label)
        ax_req.plot(xs, [r.median("requests_per_run") for r in group], style, label=label)
    for ax, title in ((ax_wall, "wall time (s)"), (ax_req, "HTTP requests per run")):
        ax.set_xscale("log")
        ax.set_xlabel("runs in the batch (N)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax_wall.set_yscale("log")
    ax_req.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(
    rows: list[Row], args: argparse.Namespace, command: str, notes: list[str], path: Path
) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    errors = sorted({e for row in rows for r in row.rounds for e in r["errors"]})
    body = [
        "# Benchmark results",
        "",
        f"Measured {now} on {_machine()}; commit {_commit()}; {_versions()}.",
        "",
        f"Command: `{command}`",
        "",
        "Medians over the rounds shown. Detection lag: the run ended on the server (the"
        " server's own timestamp: LangGraph's `run_ended_at` log field, the emulator's scripted"
        " end) until the contender learned it. On LangGraph it has two parts: the server's"
        " own (from `run_ended_at` until it sets the run's and the thread's status, the"
        " thread's `updated_at`: no client can learn of the end before that) and the"
        " contender's (from then until it saw the end)."
        " The LangGraph server's garbage-collection pauses are timed by a `gc.callbacks`"
        " hook (benchmarks/server_gc): while one runs, the server answers nothing."
        " Requests are counted at the client's httpx"
        " (retries included) on LangGraph, at the emulator on the Assistants workload. Server CPU: the server process and its children (psutil)."
        " Client CPU: the contender's own process (its cyclic garbage collections timed"
        " by a `gc.callbacks` hook)."
        " run_batch and the task-per-poll pattern"
        " talk to a `prefect server start` of their own, started fresh for each round (as"
        " deployed flows do; its CPU is a separate column); run_batch_temp takes Prefect's"
        " default, a temporary server that the flow run's process starts and partly hosts."
        ' "other load" is the CPU that neither the server nor the contender used while'
        " it ran (other helpers' test runs on this shared 2-core machine): the noise.",
        "",
        table(rows),
        "",
        "![wall time and requests per run against N](results.png)",
        "",
    ]
    if notes:
        body += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    if errors:
        body += ["## Errors seen (first of each)", "", *(f"- `{e}`" for e in errors[:20]), ""]
    path.write_text("\n".join(body), encoding="utf-8")


def _this_round(names: list[str], index: int, first_only: list[str]) -> list[str]:
    return [c for c in names if index == 0 or c not in first_only]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, small N")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--workloads", nargs="*", default=["langgraph", "langgraph-10k", "assistants"]
    )
    parser.add_argument("--contenders", nargs="*", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--langgraph-runs", type=int, default=None)
    parser.add_argument("--prefill-threads", type=int, default=None)
    parser.add_argument("--assistants-sizes", type=int, nargs="*", default=None)
    parser.add_argument(
        "--big-contenders",
        nargs="*",
        default=["run_batch", "run_batch_temp", "engine", "sdk"],
        help="contenders run at the big sizes: assistants above 1,000 and the LangGraph server "
        "holding 10,000 threads (--big-rounds rounds; seed 003's recipe took over 11 minutes there)",
    )
    parser.add_argument(
        "--assistants-rounds", type=int, default=None, help="rounds at 1,000 (default: --rounds)"
    )
    parser.add_argument(
        "--big-rounds",
        type=int,
        default=1,
        help="rounds at the big sizes: Assistants above 1,000 and the LangGraph server holding"
        " 10,000 threads",
    )
    parser.add_argument(
        "--huge-contenders",
        nargs="*",
        default=["run_batch_temp"],
        help="contenders run at the Assistants sizes above 10,000 (one round)",
    )
    parser.add_argument(
        "--first-round-only",
        nargs="*",
        default=["task_per_poll", "run_batch_temp"],
        help="contenders measured in the first round only (the slow and the side rows)",
    )
    parser.add_argument(
        "--stop-at",
        default=None,
        help="UTC HH:MM: start no contender round after it (the rest is noted as skipped)",
    )
    parser.add_argument(
        "--prefill-dir",
        default=None,
        help="keep the prefilled server state here, and reuse it when it is already there",
    )
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    args.contenders_10k = [c for c in args.contenders if c in args.big_contenders]
    rounds = args.rounds or (1 if args.quick else 3)
    lg_n = args.langgraph_runs or (200 if args.quick else 1000)
    prefill = args.prefill_threads or (1000 if args.quick else 10000)
    sizes = args.assistants_sizes or ([200, 1000] if args.quick else [1000, 10000, 100000])
    command = "python -m benchmarks " + " ".join(sys.argv[1:])
    rows: dict[tuple[str, str, int], Row] = {}
    notes: list[str] = []

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def report(final: bool) -> None:
        """Write RESULTS.md and the plot (after every round, so a late stop keeps them)."""
        ordered = sorted(
            rows.values(), key=lambda r: (r.workload, r.n, CONTENDERS.index(r.contender))
        )
        if final:
            print()
            print(table(ordered))
        plot(ordered, out.with_name("results.png"))
        write_results(ordered, args, command, notes, out)
        if final:
            print(f"\nwrote {out} and {out.with_name('results.png')}")

    stop_at: datetime | None = None
    if args.stop_at:
        hour, minute = (int(x) for x in args.stop_at.split(":"))
        stop_at = datetime.now(timezone.utc).replace(hour=hour, minute=minute, second=0)

    def attempt(workload: str, contender: str, n: int, measure: Any) -> None:
        if stop_at is not None and datetime.now(timezone.utc) >= stop_at:
            notes.append(f"{workload} {contender} N={n}: a round was skipped (--stop-at)")
            return
        try:
            figures = measure()
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            print(f"  {workload} {contender} N={n}: FAILED: {exc}"[-2000:], flush=True)
            notes.append(f"{workload} {contender} N={n}: one round failed: {first}")
            return
        record(workload, contender, n, figures)

    def record(workload: str, contender: str, n: int, figures: dict[str, Any]) -> None:
        row = rows.setdefault((workload, contender, n), Row(workload, contender, n))
        row.rounds.append(figures)
        report(final=False)
        print(
            f"  {workload} {contender} N={n}: wall {figures['wall']:.1f} s, "
            f"{figures['requests_per_run']:.2f} req/run, lag p99 {_fmt(figures['lag_p99_ms'], 0)} ms, "
            f"client CPU {figures['client_cpu_per_1000']:.1f} s/1000, other load {figures['other_cpu_pct']:.0f} %",
            flush=True,
        )

    if "langgraph" in args.workloads:
        for r in range(rounds):
            names = _this_round(args.contenders, r, args.first_round_only)
            order = names if r % 2 == 0 else list(reversed(names))
            print(f"langgraph round {r + 1}/{rounds}", flush=True)
            for contender in order:
                attempt(
                    "langgraph",
                    contender,
                    lg_n,
                    lambda c=contender: _langgraph_round(c, lg_n, 1.0, 64, None),
                )
    if "langgraph-10k" in args.workloads:
        with tempfile.TemporaryDirectory(prefix="bench-prefill-") as tmp:
            template = Path(args.prefill_dir or Path(tmp) / "state")
            reuse = (template / "done").exists()
            if stop_at is not None and datetime.now(timezone.utc) >= stop_at:
                notes.append("langgraph-10k: skipped (--stop-at)")
                args.contenders_10k = []
            seconds = 0.0
            if args.contenders_10k and reuse:
                seconds = float((template / "done").read_text())
            elif args.contenders_10k:
                try:
                    seconds = _prefill(template, prefill)
                    (template / "done").write_text(f"{seconds:.0f}")
                except (RuntimeError, httpx.HTTPError) as exc:
                    notes.append(f"langgraph-10k: the prefill failed: {exc}")
                    args.contenders_10k = []
            notes.append(
                f"langgraph-{prefill // 1000}k: each contender on a copy of one server state holding"
                f" {prefill:,} earlier finished threads (prefilled in {seconds:.0f} s), a fresh"
                f" copy for every round ({args.big_rounds} round(s), as --big-rounds says)."
            )
            workload = f"langgraph-{prefill // 1000}k"
            for r in range(args.big_rounds):
                here = _this_round(args.contenders_10k, r, args.first_round_only)
                order = here if r % 2 == 0 else list(reversed(here))
                print(f"{workload} round {r + 1}/{args.big_rounds}", flush=True)
                for contender in order:
                    attempt(
                        workload,
                        contender,
                        lg_n,
                        lambda c=contender: _langgraph_round(c, lg_n, 1.0, 64, template),
                    )
    if "assistants" in args.workloads:
        for n in sizes:
            if n <= 1000:
                names, count = args.contenders, args.assistants_rounds or rounds
            elif n <= 10000:
                names = [c for c in args.contenders if c in args.big_contenders]
                count = args.big_rounds
            else:
                names, count = [c for c in args.contenders if c in args.huge_contenders], 1
            for r in range(count):
                here = _this_round(names, r, args.first_round_only)
                order = here if r % 2 == 0 else list(reversed(here))
                print(f"assistants N={n} round {r + 1}/{count}", flush=True)
                for contender in order:
                    attempt(
                        "assistants",
                        contender,
                        n,
                        lambda c=contender, n=n: _assistants_round(c, n, 256),
                    )
    report(final=True)


if __name__ == "__main__":
    main()
