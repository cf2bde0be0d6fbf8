"""``prefect-agent-runs run``: items from a file, credentials from a block or the flags."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any, TextIO, cast

from pydantic import SecretStr

from prefect_agent_runs.cli._common import PROG, UsageError
from prefect_agent_runs.cli.items import ItemError, read_items
from prefect_agent_runs.cli.progress import ProgressBar
from prefect_agent_runs.models import BatchFailed, BatchResult, FailOn, RunRequest

__all__ = ["OPTION_FLAGS", "cmd_run", "open_out", "run_batch_with_progress", "write_records"]

OPTION_FLAGS = ("api_version",)
"""Flags of ``run`` that set a backend-specific credentials field (``BackendSpec.cli_options``)."""


def cmd_run(args: argparse.Namespace) -> int:
    """``prefect-agent-runs run``: one remote run per item; the exit code (0, 1 or 2)."""
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
    out = open_out(args.out)
    try:
        result = run_batch_with_progress(
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
        write_records(result, out if out is not None else sys.stdout)
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
    for flag in OPTION_FLAGS:
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
    """Every credentials block class: one per registered backend that has one."""
    from prefect_agent_runs.blocks.credentials import credentials_classes

    return list(credentials_classes())


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


def open_out(path: str | None) -> TextIO | None:
    """The ``--out`` file opened for writing, or None without one."""
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_records(result: BatchResult, stream: TextIO) -> None:
    """One JSON line per item of ``result`` to ``stream``."""
    for record in result.to_records():
        stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    stream.flush()


def run_batch_with_progress(
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
