"""The exception hierarchy of prefect-agent-runs.

Every error raised by this package is an :class:`AgentRunsError`. Messages always say
which backend, which run or thread, and what the server said, and never contain a secret::

    AgentRunsError
    ├── ApiError(status_code, message, code, request_id)   the server answered with an error
    │   ├── BadRequest (400, field errors from problem+json)
    │   ├── Unauthorized (401)
    │   ├── Forbidden (403)
    │   ├── NotFound (404)
    │   ├── Conflict (409)
    │   ├── RateLimited (429, retry_after)
    │   └── ServerError (5xx, or a body that is not what the API promises)
    ├── TransportError                                      no usable answer (connect, timeout)
    ├── RunError(run)                                       a run ended, or stopped, badly
    │   ├── RunFailed
    │   ├── RunCancelled
    │   ├── RunExpired
    │   ├── RunTimedOut      (our deadline passed, ``timeout_seconds``)
    │   └── RunRequiresAction
    ├── NotSupported                                        the backend has no such operation
    └── ValidationError                                     bad input, caught before any request
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect_agent_runs.models import Run

__all__ = [
    "AgentRunsError",
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "NotSupported",
    "RateLimited",
    "RunCancelled",
    "RunError",
    "RunExpired",
    "RunFailed",
    "RunRequiresAction",
    "RunTimedOut",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "ValidationError",
]


class AgentRunsError(Exception):
    """Base class of every error raised by prefect-agent-runs.

    Args:
        message: The full, human-readable message.
        backend: The backend that raised it (``"langgraph"``, ``"openai_assistants"``...).
    """

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.backend = backend

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable (Prefect persists task results and exceptions).
        return (_rebuild_error, (type(self), self.__dict__.copy()))


def _rebuild_error(cls: type[AgentRunsError], state: dict[str, Any]) -> AgentRunsError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class ApiError(AgentRunsError):
    """The server answered with an error status.

    Args:
        message: The full message (backend, what was asked, what the server said).
        status_code: The HTTP status code.
        code: The server's machine-readable error code or type, if it sent one.
        request_id: The server's request id (``x-request-id``), if it sent one.
        backend: The backend name.
        body_snippet: The first characters of the response body, secrets redacted.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        backend: str | None = None,
        body_snippet: str | None = None,
    ) -> None:
        super().__init__(message, backend=backend)
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.body_snippet = body_snippet


class BadRequest(ApiError):
    """400 or 422: the server refused the request as invalid.

    Attributes:
        field_errors: Field name to messages, from a problem+json / validation body.
    """

    def __init__(
        self,
        message: str,
        *,
        field_errors: Mapping[str, Sequence[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.field_errors: dict[str, list[str]] = {
            k: list(v) for k, v in (field_errors or {}).items()
        }


class Unauthorized(ApiError):
    """401: the credentials were missing or rejected."""


class Forbidden(ApiError):
    """403: the credentials are valid but not allowed to do this."""


class NotFound(ApiError):
    """404: the thread, run or path does not exist on this server."""


class Conflict(ApiError):
    """409: the request conflicts with the resource's state (a busy thread, for instance)."""


class RateLimited(ApiError):
    """429: too many requests.

    Attributes:
        retry_after: Seconds the server asked us to wait, if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx, or a body that is not what the API promises (an HTML page from a proxy)."""


class TransportError(AgentRunsError):
    """No usable answer: the connection failed, or the request timed out.

    Attributes:
        reached_server: False only when the request provably never reached the server
            (a connect error); None when it cannot be known (a read timeout).
    """

    def __init__(
        self, message: str, *, backend: str | None = None, reached_server: bool | None = None
    ) -> None:
        super().__init__(message, backend=backend)
        self.reached_server = reached_server


class RunError(AgentRunsError):
    """A run ended in a state that is not success, or could not be waited for.

    Attributes:
        run: The last state of the run we saw.
    """

    def __init__(self, message: str, *, run: Run, backend: str | None = None) -> None:
        super().__init__(message, backend=backend or run.backend)
        self.run = run


class RunFailed(RunError):
    """The run ended as failed (or, on LangGraph, ``error``)."""


class RunCancelled(RunError):
    """The run was cancelled (or, on LangGraph, ``interrupted`` by a cancel)."""


class RunExpired(RunError):
    """The run expired on the server (``expired``, ``incomplete`` or ``timeout``)."""


class RunTimedOut(RunError):
    """Our own deadline (``timeout_seconds``) passed before the run reached a terminal state.

    Attributes:
        cancelled: True when the remote run was cancelled because of it
            (``cancel_on_timeout``).
    """

    def __init__(self, message: str, *, run: Run, cancelled: bool = False) -> None:
        super().__init__(message, run=run)
        self.cancelled = cancelled

    @classmethod
    def deadline_passed(cls, run: Run, timeout_seconds: float, *, cancelled: bool) -> RunTimedOut:
        """The error for ``run`` when ``timeout_seconds`` passed (one wording everywhere).

        Args:
            run: The run as last seen.
            timeout_seconds: The deadline the caller set (not what was left of it).
            cancelled: Whether the remote run was cancelled.
        """
        return cls(
            f"{run.backend}: {run.describe()} did not finish within "
            f"timeout_seconds={timeout_seconds:g}"
            + ("; the remote run was cancelled" if cancelled else "; the remote run goes on"),
            run=run,
            cancelled=cancelled,
        )


class RunRequiresAction(RunError):
    """The run waits for tool outputs and no tool handler was given.

    Attributes:
        tool_names: The names of the tools the run asked for.
    """

    def __init__(self, message: str, *, run: Run, tool_names: Sequence[str] = ()) -> None:
        super().__init__(message, run=run)
        self.tool_names = list(tool_names)


class NotSupported(AgentRunsError):
    """The backend has no such operation (a capability it lacks, or a backend not built)."""


class ValidationError(AgentRunsError, ValueError):
    """Bad input caught before any request was sent."""
