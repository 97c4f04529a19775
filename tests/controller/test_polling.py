"""The per-endpoint poller against a real redis-server (no Kubernetes needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer

from streamherd.controller.polling import Poller, Source
from streamherd.decisions.totals import group_totals
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
    assert poller.interval_of("two") == 0.5, "each subscriber keeps its own pace"
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


async def test_the_oldest_pending_age_is_there_in_every_poll_and_is_an_age(
    poller: Poller, redis_server: RedisServer
) -> None:
    """Issue 10: measured for a rotating fifth of the streams, a single-key group reported
    it in one poll of five (None, 9000, None, None, None), and as the idle time of the
    lowest pending id, which a claim resets. Now: in every poll (from the last measurement
    between two), and an age: Redis's clock minus the time in the oldest pending id."""
    r = aredis.Redis.from_url(redis_server.url, decode_responses=True)
    await r.xgroup_create("orders", "g", "0", mkstream=True)
    first = await r.xadd("orders", {"n": "1"})
    second = await r.xadd("orders", {"n": "2"})
    await r.xreadgroup("g", "pod-1", {"orders": ">"})
    poller.subscribe("one", Source(key="orders"), 60)
    ages = []
    for poll in range(12):
        if poll == 6:  # a second later, a claim (the janitor's): the entry is no younger
            await asyncio.sleep(1.0)
            await r.xclaim("orders", "g", "pod-2", 0, [first], justid=True)
        result = await poller.poll_once()
        ages.append(group_totals(result.observation, ["orders"], "g").oldest_pending_age_ms)
        await asyncio.sleep(0.05)
    assert None not in ages, f"{ages}"
    assert ages == sorted(ages), "an age only grows while the entry is pending"
    assert min(ages[6:]) >= 1000, "a claim does not make an entry younger"
    seconds, micros = await r.time()
    now_ms = seconds * 1000 + micros // 1000
    assert abs((now_ms - int(first.split("-")[0])) - ages[-1]) < 1000, "the id's age"
    await r.xack("orders", "g", first, second)
    totals = group_totals((await poller.poll_once()).observation, ["orders"], "g")
    assert totals.oldest_pending_age_ms is None and totals.pending == 0
    await r.aclose()
