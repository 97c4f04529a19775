"""The per-endpoint poller against a real redis-server (no Kubernetes needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer

from streamherd.controller.polling import Poller, Source
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.metrics import Metrics


@pytest.fixture
async def poller(redis_server: RedisServer) -> AsyncIterator[Poller]:
    gateway = RedisGateway(Endpoint(url=redis_server.url))
    p = Poller(gateway, Metrics())
    yield p
    await p.stop()
    await gateway.close()


async def test_one_poll_serves_every_subscriber(poller: Poller, redis_server: RedisServer) -> None:
    r = aredis.Redis.from_url(redis_server.url, decode_responses=True)
    for key in ("a", "b", "conv:1", "conv:2"):
        await r.xadd(key, {"x": 1})
        await r.xgroup_create(key, "g", "0")
    poller.subscribe("one", Source(key="a"), 5.0)
    poller.subscribe("two", Source(key="b"), 0.5)
    poller.subscribe("three", Source(pattern="conv:*"), 5.0)
    assert poller.interval == 0.5, "the fastest subscriber sets the pace"
    result = await poller.poll_once()
    assert result.keys_of(Source(pattern="conv:*")) == ("conv:1", "conv:2")
    assert set(result.observation.streams) == {"a", "b", "conv:1", "conv:2"}
    assert result.observation.streams["a"].first_entry_id is not None, "single keys get details"
    await r.aclose()


async def test_waiters_get_the_next_result_and_are_released_on_stop(poller: Poller) -> None:
    poller.subscribe("one", Source(key="a"), 0.1)
    poller.start()
    first = await poller.next_result(0, within=5)
    assert first is not None
    second = await poller.next_result(first.seq, within=5)
    assert second is not None and second.seq > first.seq
    waiter = asyncio.create_task(poller.next_result(second.seq + 1000, within=30))
    await asyncio.sleep(0.05)
    await poller.stop()
    assert await asyncio.wait_for(waiter, 1) is None, (
        "a stopped poller releases its waiters at once"
    )


async def test_a_new_subscription_is_polled_at_once(poller: Poller) -> None:
    poller.subscribe("slow", Source(key="a"), 60)
    poller.start()
    first = await poller.next_result(0, within=5)
    assert first is not None
    poller.subscribe("new", Source(key="b"), 60)
    second = await poller.next_result(first.seq, within=2)
    assert second is not None and "b" in second.observation.streams
