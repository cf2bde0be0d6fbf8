"""Limits shared by every flow run: Prefect global concurrency limits around each request.

The transport takes a generic :data:`~prefect_agent_runs.http.Limiter` (no Prefect import
there); this module builds one from the names on a credentials block:

* ``global_concurrency_limit``: a slot of that limit is held while each request is in
  flight (:func:`prefect.concurrency.asyncio.concurrency`), so several flow runs together
  keep at most ``limit`` requests in flight to the platform;
* ``global_rate_limit``: each request takes a slot that the limit's decay frees
  (:func:`prefect.concurrency.asyncio.rate_limit`): requests per unit of time.

Both are strict: a limit that does not exist fails the request with a clear error rather
than not limiting at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prefect_agent_runs.errors import AgentRunsError
from prefect_agent_runs.http import Limiter

__all__ = ["global_limiter"]


def global_limiter(
    *,
    concurrency_limit: str | None = None,
    rate_limit: str | None = None,
    timeout_seconds: float | None = None,
) -> Limiter | None:
    """A limiter over Prefect global concurrency limits, or None when no name is given.

    Args:
        concurrency_limit: The name of a global concurrency limit held per request.
        rate_limit: The name of a global concurrency limit with slot decay, taken per
            request.
        timeout_seconds: How long a request may wait for a slot (None: as long as it takes).

    Returns:
        A callable returning an async context manager, for
        :class:`~prefect_agent_runs.http.Transport`'s ``limiter``.

    Examples:
        ```python
        client = credentials.get_client()
        client.transport.limiter = global_limiter(concurrency_limit="assistants-api")
        ```
    """
    if not concurrency_limit and not rate_limit:
        return None

    @contextlib.asynccontextmanager
    async def limit() -> AsyncIterator[None]:
        from prefect.concurrency._asyncio import (
            AcquireConcurrencySlotTimeoutError,
            ConcurrencySlotAcquisitionError,
        )
        from prefect.concurrency.asyncio import concurrency
        from prefect.concurrency.asyncio import rate_limit as take_rate_slot

        async with contextlib.AsyncExitStack() as stack:
            name = rate_limit
            try:
                if rate_limit:
                    await take_rate_slot(rate_limit, timeout_seconds=timeout_seconds, strict=True)
                name = concurrency_limit
                if concurrency_limit:
                    await stack.enter_async_context(
                        concurrency(concurrency_limit, timeout_seconds=timeout_seconds, strict=True)
                    )
            except (ConcurrencySlotAcquisitionError, AcquireConcurrencySlotTimeoutError) as exc:
                raise AgentRunsError(
                    f"Prefect global concurrency limit {name!r}: no slot was taken, so no request "
                    f"was sent ({type(exc).__name__}: {exc}). Create the limit with "
                    f"`prefect gcl create {name} --limit N`, or clear the block's field."
                ) from exc
            yield

    return limit
