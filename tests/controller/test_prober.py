"""The burst probe against a real redis-server: an idle group costs no command until the
waker arms it on its first new entry; a burst asks for one early poll of that group only;
a flow the group keeps up with asks for none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer

from streamherd.api.consumergroup import Autoscaling
from streamherd.controller.polling import Poller, Prober
from streamherd.decisions.bursts import Baseline
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.metrics import Metrics

POLICY = Autoscaling.model_validate({"minReplicas": 1, "maxReplicas": 4, "targetPerReplica": 100})


class Spy(Poller):
    def __init__(self, gateway: RedisGateway) -> None:
        super().__init__(gateway, Metrics())
        self.asked: list[set[str]] = []
        self.woken = asyncio.Event()

    def poll_now(self, who: Iterable[str] | None = None) -> None:
        self.asked.append(set() if who is None else set(who))
        self.woken.set()


@pytest.fixture
async def setup(redis_server: RedisServer) -> AsyncIterator[tuple[Spy, Prober, aredis.Redis]]:
    gateway = RedisGateway(Endpoint(url=redis_server.url))
    poller = Spy(gateway)
    prober = Prober(poller, interval=0.1)
    client = aredis.Redis.from_url(redis_server.url, decode_responses=True)
    for key in ("a", "b"):
        await client.xadd(key, {"x": "old"})
        await client.xgroup_create(key, "g", "$")
    yield poller, prober, client
    await prober.stop()
    await poller.waker().stop()
    await client.aclose()
    await gateway.close()


def baseline(lengths: dict[str, int], throughput: float | None = None) -> Baseline:
    loop = asyncio.get_running_loop()
    return Baseline(lengths, 0, 1, None, loop.time(), throughput)


async def probed(prober: Prober, ticks: int, within: float = 5.0) -> None:
    """Wait (with a deadline) until the prober has taken ``ticks`` more probes."""
    target = prober.probes + ticks
    for _ in range(int(within / 0.02)):
        if prober.probes >= target:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{prober.probes} probes, not {target}")


async def xlen_calls(client: aredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_xlen", {}).get("calls", 0))


async def test_a_burst_asks_one_early_poll_of_that_group_only(
    setup: tuple[Spy, Prober, aredis.Redis],
) -> None:
    poller, prober, client = setup
    prober.track("ga", ["a"], POLICY, baseline({"a": 1}), armed=True)
    prober.track("gb", ["b"], POLICY, baseline({"b": 1}), armed=True)
    pipe = client.pipeline(transaction=False)
    for i in range(500):
        pipe.xadd("a", {"n": i})
    await pipe.execute()
    await asyncio.wait_for(poller.woken.wait(), 5)
    assert poller.asked == [{"ga"}]
    await probed(prober, 3)  # a few more ticks: disarmed until its next poll
    assert poller.asked == [{"ga"}], "one poll's numbers ask for one early poll"


async def test_a_flow_the_group_keeps_up_with_asks_nothing(
    setup: tuple[Spy, Prober, aredis.Redis],
) -> None:
    poller, prober, client = setup
    prober.track("ga", ["a"], POLICY, baseline({"a": 1}, throughput=1000.0), armed=True)
    probes = prober.probes
    while prober.probes < probes + 5:
        await client.xadd("a", {"n": "steady"})
        await asyncio.sleep(0.05)
    assert poller.asked == []


async def test_an_idle_group_costs_nothing_until_its_first_new_entry(
    setup: tuple[Spy, Prober, aredis.Redis],
) -> None:
    poller, prober, client = setup
    prober.track("ga", ["a"], POLICY, baseline({"a": 1}), armed=False)
    poller.waker().watch("ga", ["a"], "g", then=lambda: prober.arm("ga"))
    before = await xlen_calls(client)
    await asyncio.sleep(0.5)  # five probe ticks' worth: what does *not* happen
    assert await xlen_calls(client) == before, "no probe of an idle group"
    assert prober.probes == 0
    pipe = client.pipeline(transaction=False)
    for i in range(500):
        pipe.xadd("a", {"n": i})
    await pipe.execute()
    await asyncio.wait_for(poller.woken.wait(), 5)
    assert poller.asked == [{"ga"}], "armed by the waker, then an early poll, not a wake-up"
    assert not poller.waker().watches("ga"), "the waker's watch ended when it armed the probe"
