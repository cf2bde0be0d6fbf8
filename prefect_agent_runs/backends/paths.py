"""Path segments: every id that goes into a URL path is checked and percent-encoded here.

An id with a ``/`` (or ``?``, ``#``) would reach another endpoint, and ``.`` or ``..``
would be resolved by the HTTP stack into a parent path (issue 13). :func:`path_segment`
refuses those before any request, with a :class:`~prefect_agent_runs.errors.ValidationError`
that names the backend and the field, and percent-encodes everything else.
"""

from __future__ import annotations

from urllib.parse import quote

from prefect_agent_runs.errors import ValidationError

__all__ = ["path_segment", "require_id"]

_FORBIDDEN = ("/", "?", "#", "\\")


def require_id(value: object, *, backend: str, field: str) -> str:
    """Check that ``value`` is a usable id for ``field``; return it unchanged.

    Args:
        value: The id given by the caller.
        backend: The backend's name, first word of the message.
        field: What the id is (``"thread_id"``, ``"run_id"``...), named in the message.

    Raises:
        ValidationError: The id is missing, not a string, empty, ``.`` or ``..``, has
            surrounding spaces or control characters, or contains ``/``, ``?``, ``#``
            or ``\\``.
    """
    if value is None or value == "":
        raise ValidationError(f"{backend}: {field} is required", backend=backend)
    if not isinstance(value, str):
        raise ValidationError(
            f"{backend}: {field} must be a string, not {type(value).__name__}", backend=backend
        )
    name = field.split(" ", 1)[0]
    if value in (".", ".."):
        raise ValidationError(
            f"{backend}: {name} {value!r} is not a valid id ('.' and '..' are path navigation)",
            backend=backend,
        )
    if (
        any(c in value for c in _FORBIDDEN)
        or value.strip() != value
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    ):
        raise ValidationError(
            f"{backend}: {name} {value!r} is not a valid id (it contains '/', '?', '#', '\\', "
            "control characters or surrounding spaces)",
            backend=backend,
        )
    return value


def path_segment(value: object, *, backend: str, field: str) -> str:
    """Check an id (see :func:`require_id`) and percent-encode it for a URL path.

    Args:
        value: The id given by the caller.
        backend: The backend's name, for the message.
        field: What the id is, for the message.

    Returns:
        The id, percent-encoded (``safe=""``), ready to put between two ``/``.

    Raises:
        ValidationError: The id cannot be a path segment.
    """
    return quote(require_id(value, backend=backend, field=field), safe="")
