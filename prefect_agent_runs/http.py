"""The one HTTP transport every backend goes through.

It owns: timeouts, connection limits, the User-Agent, tenacity retries per DESIGN.md's
rules, ``Retry-After`` / ``retry-after-ms`` / ``x-should-retry``, mapping of error answers
to :mod:`prefect_agent_runs.errors` (also for bodies that are not JSON), and redaction of
secrets from every message it builds. No backend has a retry loop of its own.

Retry rules (:class:`RetryMode`):

* ``IDEMPOTENT`` (GET, list, join, cancel, delete): retried on connect errors, timeouts,
  408, 429 and 5xx, with full-jitter exponential backoff, honoring the server's delay.
* ``CREATE`` (a POST that starts something): retried only when it provably did not reach
  the server or was refused before being processed (connect error, pool timeout, 429).
  Anything else (a read timeout, a 5xx) is raised with ``maybe_created`` semantics so the
  backend can look the run up before sending again.
* ``NEVER``: sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from prefect_agent_runs import timing
from prefect_agent_runs._cycles import release_response, release_retrying
from prefect_agent_runs._pool import ShardedTransport
from prefect_agent_runs._version import __version__
from prefect_agent_runs.errors import (
    AgentRunsError,
    ApiError,
    ServerError,
    TransportError,
    ValidationError,
)
from prefect_agent_runs.responses import (
    ErrorParser,
    error_from_response,
    parse_error_body,
    parse_retry_after,
    redact,
    snippet,
)
from prefect_agent_runs.transient import (
    TRANSIENT_TOLERANCE,
    UNREADABLE_BODY,
    Backoff,
    is_transient_status,
)

__all__ = [
    "USER_AGENT",
    "ErrorParser",
    "Limiter",
    "RetryMode",
    "RetryPolicy",
    "Transport",
    "TransportStats",
    "error_from_response",
    "parse_error_body",
    "parse_retry_after",
    "redact",
]

_LONG_DIGITS = re.compile(rb"\d{19}")


def loads_json(content: bytes | str) -> Any:
    """Decode a JSON document: orjson where it reads it exactly, else ``json``.

    orjson (a Prefect dependency) is faster, and it shares the str objects of repeated
    keys between documents, so 10,000 kept runs hold one ``"created_at"``. It reads an
    integer past 64 bits as a float, and refuses what ``json`` reads (a BOM, NaN...).

    Raises:
        ValueError: Neither reads it.
    """
    raw = content.encode() if isinstance(content, str) else content
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(content)


logger = logging.getLogger("prefect_agent_runs.http")

USER_AGENT = f"prefect-agent-runs/{__version__}"
"""The ``User-Agent`` header of every request."""

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest answer read (issue 13: a 50 MB answer was read and decoded whole); a longer one
is refused with a :class:`ServerError` after reading at most this many bytes."""
BODY_TOO_LARGE = "body_too_large"
"""``ApiError.code`` of an answer longer than ``max_body_bytes``."""

Limiter = Callable[[], contextlib.AbstractAsyncContextManager[object]]
"""A limit shared beyond this process, taken around every request: a callable returning
an async context manager (entered before the request is sent, left when its answer is in).

The transport knows nothing of Prefect; the credentials blocks inject one built on Prefect's
global concurrency limits (:func:`prefect_agent_runs.blocks.limits.global_limiter`)."""

Sleep = Callable[[float], Awaitable[None]]


class RetryMode(str, enum.Enum):
    """Which failures of a request may be retried (see the module docstring)."""

    IDEMPOTENT = "idempotent"
    CREATE = "create"
    NEVER = "never"


@dataclass(frozen=True)
class RetryPolicy:
    """How the transport retries.

    Attributes:
        max_retries: Retries after the first attempt (0: send once).
        initial_backoff_seconds: The first backoff's upper bound (full jitter).
        max_backoff_seconds: Cap of one backoff.
        max_retry_after_seconds: A server-requested delay is honored up to this; a longer
            one is clamped to it (and logged).
    """

    max_retries: int = TRANSIENT_TOLERANCE
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0
    max_retry_after_seconds: float = 60.0


@dataclass
class TransportStats:
    """Counters of what a transport did; read by tests and benchmarks.

    Attributes:
        requests: HTTP requests sent (every attempt counts).
        retries: Attempts that were retries.
        by_status: Responses per status code (0 for no response).
    """

    requests: int = 0
    retries: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class _RetryableError(Exception):
    """Internal: carries a retryable failure through tenacity."""

    def __init__(self, error: AgentRunsError, delay_hint: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay_hint = delay_hint


class _wait_hint_or_backoff(wait_base):
    """tenacity wait: the server's delay (clamped) when it sent one, else jittered backoff."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = Backoff(policy.initial_backoff_seconds, policy.max_backoff_seconds)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _RetryableError) and exc.delay_hint is not None:
            if exc.delay_hint > self.policy.max_retry_after_seconds:
                logger.warning(
                    "server asked to wait %.1fs; waiting %.1fs (max_retry_after_seconds)",
                    exc.delay_hint,
                    self.policy.max_retry_after_seconds,
                )
            return min(exc.delay_hint, self.policy.max_retry_after_seconds)
        return float(self.backoff(retry_state))


def _response_is_retryable(response: httpx.Response, mode: RetryMode) -> bool:
    should = response.headers.get("x-should-retry")
    if should == "false":
        return False
    if mode is RetryMode.NEVER:
        return False
    if mode is RetryMode.CREATE:
        return response.status_code == 429 or should == "true"
    return should == "true" or is_transient_status(response.status_code)


class Transport:
    """One HTTP client per backend instance: every request of a backend goes through it.

    Args:
        backend: The backend's name, used in every message.
        base_url: The API root.
        headers: Headers sent on every request (auth included: they are never logged).
        secrets: Secret values to redact from messages and logs.
        params: Query parameters sent on every request (Azure's ``api-version``).
        request_timeout_seconds: Timeout of one HTTP request (connect, read, write, pool).
        max_retries: Transport retries after the first attempt (default: the wait loop's
            tolerance, :data:`~prefect_agent_runs.transient.TRANSIENT_TOLERANCE`).
        max_concurrency: Connections the pool may open (and requests in flight).
        retry_policy: Overrides ``max_retries`` and the backoff bounds.
        sleep: The sleep used between retries (default: the engine's,
            :mod:`prefect_agent_runs.timing`).
        http_client: Use this ``httpx.AsyncClient`` instead of building one (tests, respx).
        error_hook: Called with each :class:`ApiError` before it is raised; may return a
            replacement (e.g. "the Assistants API was retired here").
        error_parser: Reads the server's error bodies (default
            :func:`~prefect_agent_runs.responses.parse_error_body`).
        max_body_bytes: Longest answer read (a longer one raises :class:`ServerError`).
        verify_tls: Verify the server's TLS certificate (the default). Turning it off is
            logged as a warning.
        limiter: A shared limit taken around each request and each stream (after the
            local ``max_concurrency`` slot); settable later as ``transport.limiter``.

    Raises:
        ValidationError: ``base_url`` is not an ``http(s)://host`` URL.
    """

    def __init__(
        self,
        *,
        backend: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        params: Mapping[str, str] | None = None,
        request_timeout_seconds: float = 30.0,
        max_retries: int = TRANSIENT_TOLERANCE,
        max_concurrency: int = 32,
        retry_policy: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        http_client: httpx.AsyncClient | None = None,
        error_hook: Callable[[ApiError], ApiError] | None = None,
        error_parser: ErrorParser | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        verify_tls: bool = True,
        limiter: Limiter | None = None,
    ) -> None:
        self.backend = backend
        self.limiter = limiter
        check_base_url(base_url, backend=backend)
        self.base_url = base_url.rstrip("/")
        self.max_body_bytes = max_body_bytes
        if not verify_tls:
            logger.warning(
                "%s: TLS certificate verification is OFF for %s (verify_tls=False): anyone "
                "on the network path can read the API key",
                backend,
                self.base_url,
            )
        self.secrets = [s for s in secrets if s]
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self.request_timeout_seconds = request_timeout_seconds
        self._sleep: Sleep = sleep or timing.sleep
        self._error_hook = error_hook
        self.error_parser: ErrorParser = error_parser or parse_error_body
        self.stats = TransportStats()
        self.max_concurrency = max_concurrency
        self._slots: asyncio.Semaphore | None = None
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        all_headers.update(headers or {})
        self._owns_client = http_client is None
        if http_client is None:
            http_client = httpx.AsyncClient(
                base_url=self.base_url,
                # The pool never times out: _slots bounds requests in flight instead, so
                # thousands of waiters can queue for max_concurrency connections.
                timeout=httpx.Timeout(request_timeout_seconds, pool=None),
                # small pools: httpcore walks every connection of a pool on each request
                # (the client's own ``verify`` is ignored once a transport is given)
                transport=ShardedTransport(max_concurrency, verify=verify_tls),
                headers=all_headers,
                params=dict(params or {}),
                follow_redirects=False,
            )
        else:
            http_client.headers.update(all_headers)
            if params:
                http_client.params = http_client.params.merge(dict(params))
        self.client = http_client

    def __repr__(self) -> str:
        return f"Transport(backend={self.backend!r}, base_url={self.base_url!r})"

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (only if this transport built it)."""
        if self._owns_client:
            await self.client.aclose()

    def _raise_api_error(self, response: httpx.Response, action: str) -> ApiError:
        error = error_from_response(
            response,
            backend=self.backend,
            action=action,
            secrets=self.secrets,
            parser=self.error_parser,
        )
        if self._error_hook is not None:
            error = self._error_hook(error)
        return error

    def _transport_error(self, exc: httpx.HTTPError, action: str) -> TransportError:
        reached: bool | None = None
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            reached = False
        kind = type(exc).__name__
        detail = redact(str(exc) or kind, self.secrets)
        where = (
            "before reaching the server"
            if reached is False
            else "(the server may have received it)"
        )
        return TransportError(
            f"{self.backend}: {action} failed {where}: {kind}: {detail} [{self.base_url}]",
            backend=self.backend,
            reached_server=reached,
        )

    def _limit(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self.limiter() if self.limiter is not None else contextlib.nullcontext()

    @property
    def slots(self) -> asyncio.Semaphore:
        """The semaphore that bounds requests in flight to ``max_concurrency``."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        return self._slots

    async def _send_once(
        self,
        method: str,
        path: str,
        *,
        action: str,
        mode: RetryMode,
        json_body: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        timeout: float | None,
    ) -> httpx.Response:
        self.stats.requests += 1
        request_timeout = (
            httpx.Timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT
        )
        try:
            async with self.slots, self._limit():
                request = self.client.build_request(
                    method,
                    path,
                    json=json_body,
                    params=_clean_params(params),
                    headers=dict(headers or {}),
                    timeout=request_timeout,
                )
                response = await self.client.send(request, stream=True)
                try:
                    await self._read_capped(response, action)
                finally:
                    await response.aclose()
                    release_response(response)
        except httpx.HTTPError as exc:
            self.stats.by_status[0] = self.stats.by_status.get(0, 0) + 1
            error = self._transport_error(exc, action)
            retryable = mode is RetryMode.IDEMPOTENT or (
                mode is RetryMode.CREATE and error.reached_server is False
            )
            if retryable:
                raise _RetryableError(error, None) from exc
            raise error from exc
        self.stats.by_status[response.status_code] = (
            self.stats.by_status.get(response.status_code, 0) + 1
        )
        if response.status_code >= 400:
            api_error = self._raise_api_error(response, action)
            if _response_is_retryable(response, mode):
                raise _RetryableError(api_error, parse_retry_after(response.headers))
            raise api_error
        return response

    async def _read_capped(self, response: httpx.Response, action: str) -> None:
        """Read the body into ``response`` (``.content``), refusing more than the cap."""
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large(response, action, f"{int(declared):,} bytes announced")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large(response, action, f"more than {size:,} bytes")
            chunks.append(chunk)
        response._content = b"".join(chunks)

    def _too_large(self, response: httpx.Response, action: str, what: str) -> ServerError:
        return ServerError(
            f"{self.backend}: {action}: HTTP {response.status_code} answered {what}, over "
            f"the {self.max_body_bytes:,}-byte limit (max_body_bytes); not read. Is base_url "
            "the API root?",
            status_code=response.status_code,
            code=BODY_TOO_LARGE,
            backend=self.backend,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        action: str,
        mode: RetryMode = RetryMode.IDEMPOTENT,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        decode: bool = False,
    ) -> Any:
        """Send a request with the retry rules of ``mode``; return a 2xx/3xx response.

        With ``decode``, returns ``(response, decoded JSON)``: the body is decoded inside
        the retry loop, so a
        2xx answer whose body is cut short or not JSON is retried like a dropped
        connection (for a create: reported as ambiguous, the create happened).

        Args:
            method: HTTP method.
            path: Path relative to ``base_url`` (ids already quoted by the backend).
            action: What this request does, for messages (``"get run r1 on thread t1"``).
            mode: Which failures may be retried.
            json: JSON body.
            params: Query parameters (None values are dropped).
            headers: Extra headers for this request.
            timeout: Overrides ``request_timeout_seconds`` for this request (join waits).

        Raises:
            ApiError: The server answered with an error (after retries, when allowed).
            TransportError: No usable answer (after retries, when allowed).
        """

        async def attempt() -> httpx.Response | tuple[httpx.Response, Any]:
            response = await self._send_once(
                method,
                path,
                action=action,
                mode=mode,
                json_body=json,
                params=params,
                headers=headers,
                timeout=timeout,
            )
            if not decode:
                return response
            try:
                return response, self.decode(response, action)
            except ServerError as exc:
                if mode is RetryMode.IDEMPOTENT:
                    raise _RetryableError(exc, None) from None
                raise

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry_policy.max_retries + 1),
            wait=_wait_hint_or_backoff(self.retry_policy),
            retry=retry_if_exception(lambda e: isinstance(e, _RetryableError)),
            sleep=self._sleep,
            reraise=True,
            before_sleep=self._log_retry,
        )
        try:
            return await retrying(attempt)
        except _RetryableError as exc:
            raise exc.error from exc.__cause__
        finally:
            release_retrying(retrying)

    def _log_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.info(
            "%s (attempt %d of %d, retrying in %.2fs)",
            exc,
            state.attempt_number,
            self.retry_policy.max_retries + 1,
            delay,
        )

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        action: str,
        mode: RetryMode = RetryMode.IDEMPOTENT,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Like :meth:`request`, and decode the JSON body.

        An empty body decodes to None. A body that is not JSON raises :class:`ServerError`
        with a snippet of it, never a JSONDecodeError; for an idempotent request it is
        retried first (the decode is inside the retry loop).
        """
        _, body = await self.request(
            method,
            path,
            action=action,
            mode=mode,
            json=json,
            params=params,
            headers=headers,
            timeout=timeout,
            decode=True,
        )
        return body

    def decode(self, response: httpx.Response, action: str) -> Any:
        """Decode a successful response's JSON body, or raise :class:`ServerError`."""
        content = response.content
        if not content.strip():
            return None
        try:
            return loads_json(content)
        except ValueError:
            pass
        text = response.text  # its declared charset
        if not text.strip():
            return None
        try:
            return json.loads(text)  # what orjson refuses but json reads (a BOM, NaN, ...)
        except ValueError:
            raise ServerError(
                f"{self.backend}: {action}: HTTP {response.status_code} answered a body that is "
                f"not JSON (cut short, or not the API): {snippet(text, self.secrets)}",
                status_code=response.status_code,
                code=UNREADABLE_BODY,
                backend=self.backend,
                body_snippet=snippet(text, self.secrets),
            ) from None

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        action: str,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Open a streaming response (SSE). Not retried here: the caller resumes.

        Yields:
            The open response, status already checked (an error status raises the mapped
            :class:`ApiError` after reading the body).
        """
        self.stats.requests += 1
        stream_timeout = httpx.Timeout(self.request_timeout_seconds, read=timeout, pool=None)
        response: httpx.Response | None = None
        try:
            async with (
                self.slots,
                self._limit(),
                self.client.stream(
                    method,
                    path,
                    json=json,
                    params=_clean_params(params),
                    headers={"Accept": "text/event-stream", **(headers or {})},
                    timeout=stream_timeout,
                ) as response,
            ):
                self.stats.by_status[response.status_code] = (
                    self.stats.by_status.get(response.status_code, 0) + 1
                )
                if response.status_code >= 400:
                    await response.aread()
                    raise self._raise_api_error(response, action)
                yield response
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, action) from exc
        finally:
            if response is not None:
                release_response(response)


def check_base_url(base_url: str, *, backend: str) -> None:
    """Refuse a base URL that is not ``http(s)://host[:port][/path]``, before any request.

    Args:
        base_url: The API root.
        backend: The backend's name, for the message.

    Raises:
        ValidationError: The URL has no http(s) scheme or no host.
    """
    text = base_url if isinstance(base_url, str) else ""
    try:
        url = httpx.URL(text)
        ok = url.scheme in ("http", "https") and bool(url.host) and text.strip() == text
    except (httpx.InvalidURL, ValueError, TypeError):
        ok = False
    if not ok:
        raise ValidationError(
            f"{backend}: base_url {base_url!r} is not a valid API root: it needs http:// or "
            "https://, a host, and no spaces (e.g. 'https://api.example.com/v1')",
            backend=backend,
        )


def _clean_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = value
    return out
