"""How a LangGraph run stream resumes (``GET .../stream`` with ``Last-Event-ID``).

The server's event ids are ``<ms>-<seq>`` and may repeat (two events in one millisecond),
and ``Last-Event-ID: X`` replays the events after X. So a reconnect asks for the events
after the millisecond before the last id, and events already yielded are skipped by
(id, event, data). The reading itself is the shared
:func:`~prefect_agent_runs.backends.sse.read_events`.
"""

from __future__ import annotations

from typing import Any

from prefect_agent_runs.backends.sse import ResumePoint

__all__ = ["LangGraphResume", "is_not_found"]


def is_not_found(data: Any) -> bool:
    """True for the data of the ``error`` event the server sends for an unknown run.

    Args:
        data: The decoded data of an ``error`` event.
    """
    return isinstance(data, dict) and str(data.get("message", "")).startswith("404")


def _id_key(event_id: str) -> tuple[int, int] | None:
    parts = event_id.split("-")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    except ValueError:
        return None


class LangGraphResume(ResumePoint):
    """Where a LangGraph stream is, for a lossless, repeat-free reconnect.

    Args:
        last_event_id: Resume after this event (None: from the start).
    """

    def __init__(self, last_event_id: str | None = None) -> None:
        super().__init__(last_event_id)
        self._recent: set[tuple[str, str, str]] = set()

    def header(self) -> str | None:
        """The ``Last-Event-ID`` to send: just before the last id, so its twins replay."""
        if self.last is None:
            return None
        key = _id_key(self.last)
        if key is None or not self.yielded:
            return self.last
        return f"{max(0, key[0] - 1)}-0"

    def headers(self) -> dict[str, str]:
        """``Last-Event-ID`` (see :meth:`header`), when the stream has a position."""
        value = self.header()
        return {"Last-Event-ID": value} if value else {}

    def is_new(self, event_id: str | None, event: str, data: str) -> bool:
        """Record an event; False when it was already yielded (a replay).

        Args:
            event_id: The event's id.
            event: The event's name.
            data: The event's raw data.
        """
        if event_id:
            marker = (event_id, event, data)
            if marker in self._recent:
                return False
            key = _id_key(event_id)
            last_key = _id_key(self.last) if self.last else None
            if self.yielded and key and last_key and key[0] < last_key[0] - 1:
                return False  # older than the replay window: seen before the drop
            self._recent.add(marker)
            if key and (last_key is None or key >= last_key):
                self.last = event_id
                floor = key[0] - 1
                self._recent = {m for m in self._recent if (_id_key(m[0]) or (0, 0))[0] >= floor}
        self.yielded += 1
        return True
