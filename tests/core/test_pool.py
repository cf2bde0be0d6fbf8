"""The sharded connection pool: requests spread over small pools, slots given back."""

from __future__ import annotations

import asyncio

import httpx

from prefect_agent_runs._pool import ShardedTransport
from prefect_agent_runs.http import Transport
from prefect_agent_runs.testing import AssistantsEmulator


def test_shard_count_follows_the_connection_limit() -> None:
    assert ShardedTransport(1).shards == 1
    assert ShardedTransport(16).shards == 1
    assert ShardedTransport(17).shards == 2
    assert ShardedTransport(272).shards == 17
    many = ShardedTransport(64, shard_size=16)
    contexts = {id(s.transport._pool._ssl_context) for s in many._shards}
    assert len(contexts) == 1  # one TLS context shared by the pools


async def test_requests_spread_and_give_their_slots_back() -> None:
    with AssistantsEmulator() as emu:
        transport = ShardedTransport(64, shard_size=16)
        async with httpx.AsyncClient(base_url=emu.base_url, transport=transport) as client:
            answers = await asyncio.gather(*(client.get("/assistants") for _ in range(100)))
            assert {a.status_code for a in answers} == {200}
            async with client.stream("GET", "/assistants") as response:
                assert max(s.active for s in transport._shards) == 1
                await response.aread()
        assert [s.active for s in transport._shards] == [0, 0, 0, 0]


def test_the_transport_uses_it() -> None:
    transport = Transport(backend="test", base_url="http://127.0.0.1:1", max_concurrency=100)
    assert isinstance(transport.client._transport, ShardedTransport)
    assert transport.client._transport.shards == 7
