"""A connection pool that does not scan hundreds of connections on every request.

httpcore's pool walks every connection (and every queued request) each time a request
starts or ends, asking each socket whether it is still readable: with 256 requests in
flight that walk was a third of a batch's client CPU. :class:`ShardedTransport` keeps
several small httpcore pools and sends each request to the one with the fewest requests
in flight, so each walk covers at most ``shard_size`` connections.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

__all__ = ["ShardedTransport"]

SHARD_SIZE = 16
"""Connections per shard."""


class _Shard:
    __slots__ = ("active", "transport")

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.active = 0


class _TrackedStream(httpx.AsyncByteStream):
    """A response body that gives its shard's slot back when it is closed."""

    __slots__ = ("_closed", "_inner", "_shard")

    def __init__(self, inner: Any, shard: _Shard) -> None:
        self._inner = inner
        self._shard = shard
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._shard.active -= 1
            await self._inner.aclose()


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
        self._shards = [
            _Shard(httpx.AsyncHTTPTransport(limits=limits, **transport_kwargs))
            for _ in range(count)
        ]

    @property
    def shards(self) -> int:
        """How many pools there are."""
        return len(self._shards)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shard = self._shards[0]
        for candidate in self._shards:
            if candidate.active < shard.active:
                shard = candidate
        shard.active += 1
        try:
            response = await shard.transport.handle_async_request(request)
        except BaseException:
            shard.active -= 1
            raise
        response.stream = _TrackedStream(response.stream, shard)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.transport.aclose()
