"""The sharded connection pool: requests spread over small pools, slots given back."""

from __future__ import annotations

import asyncio

import httpx

from prefect_agent_runs._pool import ShardedTransport
from prefect_agent_runs.http import Transport
from prefect_agent_runs.testing import AssistantsEmulator
from prefect_agent_runs.testing._serve import ServedApp


class _SlowBody(ServedApp):
    """``GET /slow`` answers a body in 50 chunks, 0.1 s apart; ``GET /fast`` at once."""

    def __init__(self) -> None:
        super().__init__()

        async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
            assert scope["type"] == "http"
            await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
            if scope["path"] == "/slow":
                for _ in range(50):
                    await send(
                        {"type": "http.response.body", "body": b"x" * 100, "more_body": True}
                    )  # type: ignore[operator]
                    await asyncio.sleep(0.1)
            await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

        self.app = app


def test_shard_count_follows_the_connection_limit() -> None:
    assert ShardedTransport(1).shards == 1
    assert ShardedTransport(272).shards == 272  # one connection each by default
    assert ShardedTransport(16, shard_size=16).shards == 1
    assert ShardedTransport(17, shard_size=16).shards == 2
    assert ShardedTransport(272, shard_size=16).shards == 17
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


async def test_a_free_connection_is_reused_and_a_full_pool_queues_where_fewest_wait() -> None:
    with AssistantsEmulator() as emu:
        transport = ShardedTransport(3)
        async with httpx.AsyncClient(base_url=emu.base_url, transport=transport) as client:
            for _ in range(5):  # one after the other: always the warm connection
                assert (await client.get("/assistants")).status_code == 200
            assert [s.active for s in transport._shards] == [0, 0, 0]
            opened = [s.transport._pool.connections for s in transport._shards]
            assert [len(c) for c in opened] == [1, 0, 0]
            # 3 bodies held open take the 3 shards; 2 more queue on different shards
            held = [await client.send(client.build_request("GET", "/assistants"), stream=True)]
            held += [
                await client.send(client.build_request("GET", "/assistants"), stream=True)
                for _ in range(2)
            ]
            assert sorted(s.active for s in transport._shards) == [1, 1, 1]
            assert transport._free == []
            queued = [asyncio.ensure_future(client.get("/assistants")) for _ in range(2)]
            await asyncio.sleep(0)
            assert sorted(s.active for s in transport._shards) == [1, 2, 2]
            for response in held:
                await response.aclose()
            assert {a.status_code for a in await asyncio.gather(*queued)} == {200}
        assert [s.active for s in transport._shards] == [0, 0, 0]
        assert all(s.free for s in transport._shards)
        assert len(transport._free) == 3


def test_the_transport_uses_it() -> None:
    transport = Transport(backend="test", base_url="http://127.0.0.1:1", max_concurrency=100)
    assert isinstance(transport.client._transport, ShardedTransport)
    assert transport.client._transport.shards == 100


async def test_a_reader_cancelled_mid_body_never_blocks_the_next_request() -> None:
    """A stream reader cancelled while reading (as a batch cancels a run's stream), or
    cancelled again while its response closes: the next request must not be handed a
    connection that httpcore still holds (it would wait behind it for ever)."""
    with _SlowBody() as served:
        transport = ShardedTransport(4)
        async with httpx.AsyncClient(base_url=served.url, transport=transport) as client:

            async def read_slowly() -> None:
                async with client.stream("GET", "/slow") as response:
                    async for _ in response.aiter_bytes():
                        pass

            for again in range(3):
                reader = asyncio.ensure_future(read_slowly())
                await asyncio.sleep(0.25)  # a few chunks in
                reader.cancel()
                for _ in range(again):  # cancelled again while the response closes
                    await asyncio.sleep(0)
                    reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                for _ in range(3):  # one after the other: each takes the warm shard first
                    answer = await asyncio.wait_for(client.get("/fast"), timeout=10)
                    assert answer.text == "ok"
        assert [s.active for s in transport._shards] == [0, 0, 0, 0]
