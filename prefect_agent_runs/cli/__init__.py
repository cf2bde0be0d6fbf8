"""The ``prefect-agent-runs`` command: run a batch of remote agent runs from a file.

Usage::

    prefect-agent-runs run items.jsonl --backend langgraph --url http://127.0.0.1:8123 \\
        --assistant agent --out results.jsonl
    prefect-agent-runs run items.csv --block my-assistants --assistant asst_123
    cat items.jsonl | prefect-agent-runs run --backend openai_assistants \\
        --url https://NAME.openai.azure.com/openai --api-version 2024-05-01-preview \\
        --api-key-env AZURE_OPENAI_API_KEY --assistant asst_123
    prefect-agent-runs demo                       # offline: built-in Assistants emulator
    prefect-agent-runs demo --backend langgraph   # offline: real `langgraph dev` server

Both commands run the ``run_batch`` flow; without a configured Prefect API it runs in
Prefect's embedded (ephemeral) mode. Exit codes: 0 every item completed, 1 some item did
not (or the batch could not run), 2 a usage error (bad option, bad item line, missing
block or API key variable), 130 SIGINT, 143 SIGTERM.

Signals: on SIGTERM or SIGINT the flow cancels the remote runs it started (in process),
then the command stops Prefect's embedded server (and the demo its local server) before
it exits. Prefect alone would not: its flow engine re-raises SIGTERM with the default
action, which kills the process before ``atexit`` stops the embedded server, leaving it
running forever (issue 13). SIGKILL cannot be caught; nothing here survives it cleanly.

The parsing and the output live here; the batching is :func:`prefect_agent_runs.flows.run_batch`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from prefect_agent_runs.cli._common import PROG, UsageError
from prefect_agent_runs.cli.demo import cmd_demo, print_table
from prefect_agent_runs.cli.run import cmd_run
from prefect_agent_runs.flows._embedded import (
    EMBEDDED_SERVER_TIMEOUT_TEXT,
    EmbeddedServerDidNotStart,
    describe_start_failure,
    embedded_servers,
    stop_embedded_server,
)
from prefect_agent_runs.models import FailOn

__all__ = [
    "Terminated",
    "UsageError",
    "build_parser",
    "main",
    "print_table",
    "stop_embedded_server",
]

DEMO_ITEMS = 20


# -- argument parsing ---------------------------------------------------------------------


def _fail_on(value: str) -> FailOn:
    if value in ("never", "any"):
        return cast(FailOn, value)
    try:
        ratio = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'never', 'any' or a ratio between 0 and 1, not {value!r}"
        ) from None
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"the ratio must be between 0 and 1, not {value}")
    return ratio


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return number


def _backends() -> list[str]:
    """The registered backends (the ``--backend`` choices)."""
    from prefect_agent_runs.backends import registry

    return registry.names()


def _demo_backends() -> list[str]:
    """The registered backends that have a demo."""
    from prefect_agent_runs.backends import registry

    return [spec.name for spec in registry.specs() if spec.demo is not None]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-concurrency",
        type=_positive_int,
        default=32,
        metavar="N",
        help="runs in flight at once (default: 32)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="write one JSON line per item to FILE",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show progress on stderr")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Prefect's flow and task logs"
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``prefect-agent-runs``.

    Returns:
        The parser, with the ``run`` and ``demo`` sub-commands.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run batches of remote agent runs (LangGraph, OpenAI-compatible "
        "Assistants) as a Prefect flow.",
    )
    from prefect_agent_runs._version import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run one remote run per item of a JSONL/CSV file (or stdin)",
        description="Run one remote run per item and write one JSON line per item. "
        "An item is a JSON object per line (or a CSV row) with key, message and/or input, "
        "and optionally thread_id, metadata, assistant_id, instructions, options. "
        "Exit 0 when every item completed, 1 when some did not, 2 on a usage error.",
    )
    run.add_argument(
        "items",
        nargs="?",
        default="-",
        metavar="ITEMS",
        help="a .jsonl or .csv file; '-' or nothing reads JSON lines from stdin",
    )
    run.add_argument(
        "--format",
        choices=("auto", "jsonl", "csv"),
        default="auto",
        help="item format (default: csv for *.csv, else jsonl)",
    )
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--block", metavar="NAME", help="a saved credentials block of this package, by name"
    )
    where.add_argument("--backend", choices=_backends(), help="the backend to call")
    run.add_argument("--url", metavar="URL", help="the backend's API root (with --backend)")
    run.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="the environment variable holding the API key (never pass a key itself)",
    )
    run.add_argument(
        "--api-version",
        metavar="VERSION",
        help="Azure OpenAI API version (openai_assistants; turns on Azure mode)",
        dest="api_version",
    )
    run.add_argument(
        "--assistant",
        metavar="ID",
        help="assistant / graph id of the items that name no assistant_id",
    )
    run.add_argument(
        "--batch-key",
        metavar="KEY",
        help="names the batch; run again with the same key to resume it",
    )
    run.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="longest wait for each run (default: no limit)",
    )
    run.add_argument(
        "--no-cancel-on-timeout",
        action="store_true",
        help="leave a run going on the server when --timeout passes",
    )
    run.add_argument(
        "--no-results",
        action="store_true",
        help="do not read what each run wrote to its thread",
    )
    run.add_argument(
        "--fail-on",
        type=_fail_on,
        default="never",
        metavar="never|any|RATIO",
        help="when the Prefect flow run is marked failed (default: never); the exit code "
        "is 1 whenever an item did not complete",
    )
    _add_common(run)
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser(
        "demo",
        help="run a small batch against a built-in local server (no setup, no network)",
        description="Start a local server, run a batch of echo runs through the run_batch "
        "flow (Prefect's embedded mode unless a Prefect API is configured) and print a table.",
    )
    demo.add_argument(
        "--backend",
        choices=_demo_backends(),
        default="openai_assistants",
        help="openai_assistants: the built-in Assistants API emulator (default); "
        "langgraph: the real LangGraph dev server (needs the 'langgraph' extra)",
    )
    demo.add_argument(
        "--items",
        type=_positive_int,
        default=DEMO_ITEMS,
        metavar="N",
        help=f"how many runs (default: {DEMO_ITEMS})",
    )
    _add_common(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


# -- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``prefect-agent-runs`` with ``argv`` (default: ``sys.argv[1:]``).

    Args:
        argv: The arguments, without the program name.

    Returns:
        The exit code: 0 success, 1 some item did not complete, 2 usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    handler = cast(Callable[[argparse.Namespace], int], args.handler)
    previous = _catch_sigterm()
    before = embedded_servers()
    try:
        _quiet_prefect_console(args.verbose)
        with _prefect_settings():
            return handler(args)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except EmbeddedServerDidNotStart as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # Prefect's own, when the flow engine was the first to start it
        if EMBEDDED_SERVER_TIMEOUT_TEXT not in str(exc):
            raise
        print(f"{PROG} {args.command}: error: {describe_start_failure(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted (SIGINT); the batch's remote runs were cancelled", file=sys.stderr
        )
        return 130
    except Terminated:
        print(
            f"{PROG}: terminated (SIGTERM); the batch's remote runs were cancelled", file=sys.stderr
        )
        return 143
    finally:
        stop_embedded_server(keep=before)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM reached the command (a ``BaseException``, like ``KeyboardInterrupt``: it
    unwinds every ``finally`` and context manager on its way out)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _catch_sigterm() -> Any:
    """Turn SIGTERM into :class:`Terminated`; the previous handler (None off the main thread).

    Prefect's flow engine installs its own SIGTERM handler while a flow runs (the flow's
    ``finally`` blocks cancel the remote runs), and then re-sends the signal to the handler
    that was there before: this one, so the command unwinds instead of dying.
    """
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (main() called from a thread)
        return None


EMBEDDED_STARTUP_TIMEOUT_SECONDS = 120
"""How long the command lets Prefect's embedded server take to start, unless
``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` says otherwise. Prefect's default (20 s)
is shorter than a first start with a fresh ``PREFECT_HOME`` on a small machine."""


@contextlib.contextmanager
def _prefect_settings() -> Iterator[None]:
    """Turn off the embedded server's analytics unless the user chose otherwise, and give
    it :data:`EMBEDDED_STARTUP_TIMEOUT_SECONDS` to start unless the user set a timeout."""
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates: dict[Any, Any] = {}
    if os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "").lower() in ("false", "0"):
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = EMBEDDED_STARTUP_TIMEOUT_SECONDS
    with temporary_settings(updates=updates):
        yield


def _quiet_prefect_console(verbose: bool) -> None:
    """Show only warnings in Prefect's console logs (the Prefect API still gets them all).

    The command owns its process's console, so this is not undone when ``main`` returns
    (Prefect logs "Stopping temporary server" from an ``atexit`` hook, after ``main``).
    """
    if verbose:
        return
    import prefect.main  # noqa: F401  (configures Prefect's logging; later imports would redo it)
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(max(handler.level, logging.WARNING))
