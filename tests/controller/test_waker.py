"""The wake-from-zero reader against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer

from streamherd.controller.polling import Poller
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.metrics import Metrics


class Spy(Poller):
    def __init__(self, gateway: RedisGateway) -> None:
        super().__init__(gateway, Metrics())
        self.woken = asyncio.Event()

    def poll_now(self) -> None:
        self.woken.set()


@pytest.fixture
async def setup(redis_server: RedisServer) -> AsyncIterator[tuple[Spy, aredis.Redis]]:
    gateway = RedisGateway(Endpoint(url=redis_server.url))
    poller = Spy(gateway)
    client = aredis.Redis.from_url(redis_server.url, decode_responses=True)
    for key in ("a", "b"):
        await client.xadd(key, {"x": "old"})
        await client.xgroup_create(key, "g", "$")  # the group has read everything
    yield poller, client
    await poller.waker().stop()
    await client.aclose()
    await gateway.close()


async def test_a_new_entry_wakes_at_once(setup: tuple[Spy, aredis.Redis]) -> None:
    poller, client = setup
    poller.waker().watch("cg", ["a"], "g")
    await asyncio.sleep(0.1)
    assert not poller.woken.is_set(), "nothing new: nothing to wake"
    await client.xadd("a", {"x": "new"})
    await asyncio.wait_for(poller.woken.wait(), 5)


async def test_an_entry_added_before_the_watch_still_wakes(setup: tuple[Spy, aredis.Redis]) -> None:
    poller, client = setup
    await client.xadd("a", {"x": "arrived while the group was going to zero"})
    poller.waker().watch("cg", ["a"], "g")
    await asyncio.wait_for(poller.woken.wait(), 5)


async def test_watching_new_keys_interrupts_a_blocked_read(setup: tuple[Spy, aredis.Redis]) -> None:
    poller, client = setup
    waker = poller.waker()
    waker._block_ms = 30_000  # only an interrupted read can notice "b" within the timeout
    waker.watch("one", ["a"], "g")
    await asyncio.sleep(0.2)
    waker.watch("two", ["b"], "g")
    await client.xadd("b", {"x": "new"})
    await asyncio.wait_for(poller.woken.wait(), 5)
