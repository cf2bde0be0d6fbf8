"""What the commands of ``prefect-agent-runs`` share: the program name and the usage error."""

from __future__ import annotations

__all__ = ["PROG", "UsageError"]

PROG = "prefect-agent-runs"


class UsageError(Exception):
    """A problem with the command line or its inputs (exit code 2)."""
