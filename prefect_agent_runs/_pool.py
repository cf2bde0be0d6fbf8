"""A connection pool that does not scan hundreds of connections on every request.

httpcore's pool walks every connection (and every queued request) each time a request
starts or ends, asking each socket whether it is still readable (two system calls per
connection): with 256 requests in flight that walk was a third of a batch's client CPU.
:class:`ShardedTransport` keeps many small httpcore pools (one connection each by default)
and sends each request to a pool with a free connection, taken from a free list (the one
used last, whose connection is warm), so each walk covers ``shard_size`` connections and
choosing costs O(1).
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

__all__ = ["ShardedTransport"]

SHARD_SIZE = 1
"""Connections per shard. Measured on the Assistants emulator (2,000 runs, 256 in flight,
a busy machine): client CPU 17.0-22.5 s per 1,000 runs with 16, 16.4-17.7 with 4, 11.6 with 1."""


class _Shard:
    __slots__ = ("active", "free", "transport")

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.active = 0
        self.free = True  # on the free list


class _TrackedStream(httpx.AsyncByteStream):
    """A response body that gives its shard's slot back when it is closed."""

    __slots__ = ("_closed", "_inner", "_owner", "_shard")

    def __init__(self, inner: Any, shard: _Shard, owner: ShardedTransport) -> None:
        self._inner = inner
        self._shard = shard
        self._owner = owner
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The connection goes back to its pool only once httpcore has closed the response:
        # run that close to its end even when the caller is cancelled (a stream reader
        # cancelled mid-body), else httpcore keeps the connection ACTIVE forever and the
        # next request given this shard would queue behind it.
        closing = asyncio.ensure_future(self._inner.aclose())
        closing.add_done_callback(self._closed_callback)
        await asyncio.shield(closing)

    def _closed_callback(self, closing: asyncio.Future[None]) -> None:
        self._owner._release(self._shard)
        if not closing.cancelled():
            closing.exception()  # retrieved: the caller saw it, or was cancelled meanwhile


class ShardedTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncHTTPTransport`` split into pools of at most ``shard_size`` connections.

    Args:
        max_connections: Connections in all (as ``httpx.Limits.max_connections``).
        shard_size: Connections per pool.
        **transport_kwargs: Passed to each ``httpx.AsyncHTTPTransport`` (``verify``,
            ``http2``, ``retries``...).
    """

    def __init__(
        self, max_connections: int, *, shard_size: int = SHARD_SIZE, **transport_kwargs: Any
    ) -> None:
        count = max(1, math.ceil(max(1, max_connections) / max(1, shard_size)))
        per_shard = math.ceil(max(1, max_connections) / count)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        # one TLS context for all the pools (building one costs ~0.2 s of CPU)
        verify = transport_kwargs.pop("verify", True)
        if not isinstance(verify, ssl.SSLContext):
            verify = httpx.create_ssl_context(
                verify=verify,
                cert=transport_kwargs.pop("cert", None),
                trust_env=transport_kwargs.get("trust_env", True),
            )
        transport_kwargs["verify"] = verify
        self._per_shard = per_shard
        self._shards = [
            _Shard(httpx.AsyncHTTPTransport(limits=limits, **transport_kwargs))
            for _ in range(count)
        ]
        self._free = list(reversed(self._shards))  # a stack: the first shard is on top

    @property
    def shards(self) -> int:
        """How many pools there are."""
        return len(self._shards)

    def _usable(self, shard: _Shard) -> bool:
        """Whether httpcore can serve one more request on this shard without waiting: a
        connection left ACTIVE by a close that a cancellation interrupted inside httpcore
        (a task cancelled twice) never serves again, and must not be handed requests."""
        connections = shard.transport._pool.connections
        return len(connections) < self._per_shard or any(c.is_available() for c in connections)

    def _take(self) -> _Shard:
        """A shard with a free connection (the one freed last), else the least busy."""
        while self._free:
            shard = self._free[-1]
            if not self._usable(shard):
                self._free.pop()  # stuck: out of the free list until released again
                shard.free = False
                continue
            if shard.active + 1 >= self._per_shard:
                self._free.pop()
                shard.free = False
            break
        else:  # more requests than connections: queue where the fewest wait
            shard = min(self._shards, key=lambda s: (not self._usable(s), s.active))
        shard.active += 1
        return shard

    def _release(self, shard: _Shard) -> None:
        shard.active -= 1
        if not shard.free and shard.active < self._per_shard:
            shard.free = True
            self._free.append(shard)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self._take()
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            self._release(shard)
            raise
        response.stream = _TrackedStream(response.stream, shard, self)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.transport.aclose()
