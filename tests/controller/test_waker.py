"""The wake-from-zero reader against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

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

    def poll_now(self, who: Iterable[str] | None = None) -> None:
        self.woken_for = None if who is None else set(who)
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
    assert poller.woken_for == {"cg"}, "only the group that sleeps on the stream is polled"


async def test_an_entry_added_before_the_watch_still_wakes(setup: tuple[Spy, aredis.Redis]) -> None:
    poller, client = setup
    await client.xadd("a", {"x": "arrived while the group was going to zero"})
    poller.waker().watch("cg", ["a"], "g")
    await asyncio.wait_for(poller.woken.wait(), 5)


async def test_watching_new_keys_interrupts_a_blocked_read(setup: tuple[Spy, aredis.Redis]) -> None:
    poller, client = setup
    waker = poller.waker()
    waker._block_ms = 8_000  # only an interrupted read can notice "b" within the deadline
    waker.watch("one", ["a"], "g")
    await asyncio.sleep(0.2)
    waker.watch("two", ["b"], "g")
    await client.xadd("b", {"x": "new"})
    await asyncio.wait_for(poller.woken.wait(), 5)


async def test_a_read_whose_cancel_redis_py_swallows_does_not_hold_up_the_new_one(
    setup: tuple[Spy, aredis.Redis],
) -> None:
    """redis-py can swallow the cancellation of a command caught at one point of its
    connection checks (redis/redis-py#2028, #2551): the cancelled read then runs to the end
    of its BLOCK, or of its socket timeout. The waker must not wait for it. Here another
    group goes to sleep while the waker looks up where to read from, so the read it then
    starts is cancelled at once: the moment redis-py swallows it."""
    poller, client = setup
    waker = poller.waker()
    waker._block_ms = 8_000  # only a read that starts anew can notice "b" within the deadline
    gateway = poller.gateway
    group_positions = gateway.group_positions

    async def another_group_falls_asleep_meanwhile(
        keys: Sequence[str], group: str
    ) -> dict[str, str]:
        found = await group_positions(keys, group)
        waker.watch("two", ["b"], "g")
        return found

    gateway.group_positions = another_group_falls_asleep_meanwhile  # type: ignore[method-assign]
    waker.watch("one", ["a"], "g")
    await client.xadd("b", {"x": "new"})
    await asyncio.wait_for(poller.woken.wait(), 5)
