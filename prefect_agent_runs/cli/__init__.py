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
block or API key variable).

The parsing and the output live here; the batching is :func:`prefect_agent_runs.flows.run_batch`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO, cast

from pydantic import SecretStr

from prefect_agent_runs.cli.items import ItemError, read_items
from prefect_agent_runs.cli.progress import ProgressBar
from prefect_agent_runs.models import BatchFailed, BatchResult, FailOn, RunOutcome, RunRequest

__all__ = ["UsageError", "build_parser", "main"]

PROG = "prefect-agent-runs"
DEMO_ITEMS = 20
_REPLY_WIDTH = 60


class UsageError(Exception):
    """A problem with the command line or its inputs (exit code 2)."""


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


_OPTION_FLAGS = ("api_version",)
"""Flags of ``run`` that set a backend-specific credentials field (``BackendSpec.cli_options``)."""


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
    run.set_defaults(handler=_cmd_run)

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
    demo.set_defaults(handler=_cmd_demo)
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
    _quiet_prefect_console(args.verbose)
    try:
        with _prefect_settings():
            return handler(args)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _prefect_settings() -> Iterator[None]:
    """Turn off the embedded server's analytics unless the user chose otherwise."""
    from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    if os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "").lower() not in ("false", "0"):
        yield
        return
    with temporary_settings(updates={PREFECT_SERVER_ANALYTICS_ENABLED: False}):
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


# -- run -----------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    credentials = _credentials(args)
    if args.items == "-" and sys.stdin.isatty():
        raise UsageError("no items: give a .jsonl/.csv file or pipe JSON lines on stdin")
    try:
        requests = read_items(args.items, fmt=args.format, default_assistant_id=args.assistant)
    except ItemError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read {args.items}: {exc.strerror or exc}") from None
    if not requests:
        raise UsageError(f"no items in {'stdin' if args.items == '-' else args.items}")
    out = _open_out(args.out)
    try:
        result = _run_batch(
            credentials,
            requests,
            batch_key=args.batch_key,
            max_concurrency=args.max_concurrency,
            timeout_seconds=args.timeout,
            cancel_on_timeout=not args.no_cancel_on_timeout,
            collect_results=not args.no_results,
            fail_on=args.fail_on,
            progress=not args.no_progress,
        )
        if result is None:
            return 1
        _write_records(result, out if out is not None else sys.stdout)
    finally:
        if out is not None:
            out.close()
    return 0 if not result.failed else 1


def _credentials(args: argparse.Namespace) -> Any:
    """The credentials block from ``--block``, or built from ``--backend`` and friends."""
    if args.block:
        for flag in ("url", "api_key_env", "api_version"):
            if getattr(args, flag):
                raise UsageError(
                    f"--{flag.replace('_', '-')} cannot be combined with --block "
                    "(the block holds the address and the secret)"
                )
        return _load_block(args.block)
    if not args.url:
        raise UsageError(f"--url is required with --backend {args.backend}")
    api_key: SecretStr | None = None
    if args.api_key_env:
        value = os.environ.get(args.api_key_env)
        if not value:
            raise UsageError(f"the environment variable {args.api_key_env} is not set or empty")
        api_key = SecretStr(value)
    from prefect_agent_runs.backends import registry
    from prefect_agent_runs.blocks.credentials import credentials_class

    spec = registry.get(args.backend)
    values: dict[str, Any] = {"base_url": args.url}
    if api_key is not None:
        values[spec.secret_field] = api_key
    for flag in _OPTION_FLAGS:
        value = getattr(args, flag)
        if value is None:
            continue
        field = spec.cli_options.get(flag)
        if field is None:
            owners = [s.name for s in registry.specs() if flag in s.cli_options]
            raise UsageError(
                f"--{flag.replace('_', '-')} is for --backend {' or '.join(owners)} only"
            )
        values[field] = value
    return credentials_class(args.backend)(**values)


def _credentials_classes() -> list[Any]:
    """Every credentials block class: one per registered backend, then the planned ones."""
    from prefect_agent_runs.backends import registry
    from prefect_agent_runs.blocks.credentials import (
        AgentRunsCredentials,
        ProjectThreadsCredentials,
        WorkflowRunsCredentials,
        credentials_class,
    )

    classes: list[type[AgentRunsCredentials]] = []
    for spec in registry.specs():
        try:
            classes.append(credentials_class(spec.name))
        except Exception as exc:  # a backend without settings has no block: skip it
            logging.getLogger(__name__).debug("no block for %s: %s", spec.name, exc)
    for planned in (WorkflowRunsCredentials, ProjectThreadsCredentials):
        if planned not in classes:
            classes.append(planned)
    return classes


def _load_block(name: str) -> Any:
    """Load a saved credentials block by name, trying each credentials block type."""
    classes = _credentials_classes()
    for cls in classes:
        try:
            return cls.load(name, validate=True)
        except ValueError:
            continue
        except Exception as exc:  # the Prefect API cannot be reached, a bad block...
            raise UsageError(
                f"cannot load block {name!r} ({cls.__name__}): {type(exc).__name__}: {exc}"
            ) from None
    types = ", ".join(c.get_block_type_slug() for c in classes)
    raise UsageError(f"no credentials block named {name!r} (looked for types: {types})")


def _open_out(path: str | None) -> TextIO | None:
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_records(result: BatchResult, stream: TextIO) -> None:
    for record in result.to_records():
        stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    stream.flush()


def _run_batch(
    credentials: Any,
    requests: list[RunRequest],
    *,
    batch_key: str | None,
    max_concurrency: int,
    timeout_seconds: float | None,
    cancel_on_timeout: bool,
    collect_results: bool,
    fail_on: FailOn,
    progress: bool,
) -> BatchResult | None:
    """Run ``run_batch`` with a progress display; None when the batch could not run."""
    from prefect_agent_runs.errors import AgentRunsError, NotSupported, ValidationError
    from prefect_agent_runs.flows import progress_listener, run_batch

    items: list[RunRequest | dict[str, Any]] = list(requests)
    bar = ProgressBar(len(requests)) if progress else None
    listening = progress_listener(bar.on_outcome) if bar is not None else contextlib.nullcontext()
    if bar is not None:
        bar.start()
    started = time.monotonic()
    try:
        with listening:
            result = cast(
                BatchResult,
                run_batch(
                    credentials,
                    items,
                    batch_key=batch_key,
                    max_concurrency=max_concurrency,
                    timeout_seconds=timeout_seconds,
                    cancel_on_timeout=cancel_on_timeout,
                    collect_results=collect_results,
                    fail_on=fail_on,
                ),
            )
    except BatchFailed as exc:  # fail_on said the flow run fails; the items are all here
        result = exc.result
    except (ValidationError, NotSupported) as exc:
        raise UsageError(str(exc)) from None
    except AgentRunsError as exc:
        print(f"{PROG}: the batch could not run: {exc}", file=sys.stderr)
        return None
    finally:
        if bar is not None:
            bar.close()
    _print_summary(result, time.monotonic() - started, batch_key_given=batch_key is not None)
    return result


def _print_summary(result: BatchResult, seconds: float, *, batch_key_given: bool) -> None:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items()))
    print(
        f"{len(result.outcomes)} items in {seconds:.1f} s ({counts or 'none'}); "
        f"{len(result.failed)} did not complete; batch key {result.batch_key}",
        file=sys.stderr,
    )
    if result.failed and not batch_key_given:
        print(
            f"to resume this batch, run again with --batch-key {result.batch_key}",
            file=sys.stderr,
        )


# -- demo ----------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from prefect_agent_runs.backends import registry
    from prefect_agent_runs.blocks.credentials import credentials_class

    api = PREFECT_API_URL.value() or "embedded (ephemeral) Prefect server"
    spec = registry.get(args.backend)
    if spec.demo is None:
        raise UsageError(f"demo --backend {args.backend}: this backend has no demo")
    with contextlib.ExitStack() as stack:
        try:
            demo = stack.enter_context(spec.demo(args.items))
        except RuntimeError as exc:
            raise UsageError(f"demo --backend {args.backend}: {exc}") from None
        print(f"demo: {demo.description}; Prefect API: {api}", file=sys.stderr)
        credentials = credentials_class(spec.name)(**dict(demo.config))
        return _demo_finish(args, credentials, list(demo.requests))


def _demo_finish(args: argparse.Namespace, credentials: Any, requests: list[RunRequest]) -> int:
    out = _open_out(args.out)
    try:
        result = _run_batch(
            credentials,
            requests,
            batch_key=None,
            max_concurrency=args.max_concurrency,
            timeout_seconds=60.0,
            cancel_on_timeout=True,
            collect_results=True,
            fail_on="never",
            progress=not args.no_progress,
        )
        if result is None:
            return 1
        if out is not None:
            _write_records(result, out)
    finally:
        if out is not None:
            out.close()
    print_table(result.outcomes)
    return 0 if not result.failed else 1


def print_table(outcomes: Sequence[RunOutcome], stream: TextIO | None = None) -> None:
    """Print the outcomes as a table: key, status, seconds and reply text (or the error).

    Args:
        outcomes: The batch's outcomes.
        stream: Where to print (default ``sys.stdout``).
    """
    target = stream if stream is not None else sys.stdout
    rows = [("key", "status", "seconds", "reply")]
    for outcome in outcomes:
        seconds = (outcome.seconds_queued or 0.0) + (outcome.seconds_running or 0.0)
        text = outcome.result.text if outcome.result and outcome.result.text else ""
        if not outcome.ok and outcome.error:
            text = f"error: {outcome.error}"
        text = " ".join(text.split())
        if len(text) > _REPLY_WIDTH:
            text = text[: _REPLY_WIDTH - 1] + "…"
        rows.append(
            (outcome.key, outcome.status.value, f"{seconds:.2f}" if outcome.run else "", text)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for number, row in enumerate(rows):
        line = "  ".join(
            [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3]]
        )
        print(line.rstrip(), file=target)
        if number == 0:
            print("  ".join("-" * w for w in [*widths, len("reply")]), file=target)
