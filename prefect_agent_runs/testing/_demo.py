"""What the demos of every backend share."""

from __future__ import annotations

__all__ = ["demo_seconds"]


def demo_seconds(index: int) -> float:
    """A spread of run lengths (0.2 s to 1.1 s) so that a demo's progress moves visibly.

    Args:
        index: The demo item's number.
    """
    return round(0.2 + 0.1 * (index % 10), 2)
