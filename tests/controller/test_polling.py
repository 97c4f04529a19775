"""The per-endpoint poller against a real redis-server (no Kubernetes needed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer
from tests.gateway.helpers import command_calls

from streamherd.controller.polling import Endpoints, Poller, Source
from streamherd.decisions.sampling import age_sample
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


class Counting:
    """Which keys each poll of the gateway read (the polls per stream)."""

    def __init__(self, gateway: RedisGateway, delay: float = 0.0) -> None:
        self.polls: list[set[str]] = []
        self.delay = delay
        observe = gateway.observe

        async def counted(keys: Any, **kwargs: Any) -> Any:
            self.polls.append(set(keys))
            if self.delay:
                await asyncio.sleep(self.delay)  # a slow poll, to subscribe during it
            return await observe(keys, **kwargs)

        gateway.observe = counted  # type: ignore[method-assign]

    def of(self, key: str) -> int:
        return sum(1 for keys in self.polls if key in keys)


async def test_a_sleeping_group_on_a_busy_stream_costs_a_lookup_only_on_its_age_turns(
    poller: Poller, redis_server: RedisServer
) -> None:
    """Its first unread entry stays where it was while entries keep coming: looked up in the
    first poll and again only on the key's age turns (one poll in ``age_every``), and right
    in every poll. (A group that has read nothing yet is looked up at every poll: see
    observe.lua.)"""
    r = aredis.Redis.from_url(redis_server.url, decode_responses=True)
    await r.xgroup_create("orders", "g", "0", mkstream=True)
    await r.xadd("orders", {"n": "read"})
    await r.xreadgroup("g", "c", {"orders": ">"}, count=1)
    first = await r.xadd("orders", {"n": "0"})
    poller.subscribe("g", Source(key="orders"), 60)
    lookups = []
    for turn in range(1, 11):
        await r.xadd("orders", {"n": turn})
        before = await command_calls(r, "xrange")
        result = await poller.poll_once()
        after = await command_calls(r, "xrange")
        assert result.observation.streams["orders"].groups["g"].first_unread_id == first
        lookups.append(after - before)
    expected = [1 if turn == 1 or age_sample({"orders"}, turn, 5) else 0 for turn in range(1, 11)]
    assert lookups == expected and sum(lookups) <= 3
    await r.aclose()


async def test_a_new_subscriber_gets_a_poll_that_includes_it_first(poller: Poller) -> None:
    """Issue 13, finding 9: a RedisStream added to an endpoint already polled waited for "the
    next result newer than 0", which was the poll taken before it subscribed: its key not in
    it, so Ready=False "not observed" and a Warning Event, 0.1-0.2 s before the next poll.
    Here a poll is under way when the new subscriber comes; its first result must be a later
    poll that includes its key - and the latest result, already there, is not it."""
    counting = Counting(poller.gateway)
    poller.subscribe("old", Source(key="a"), 0.3)
    poller.start()
    first = await poller.next_result(0, within=5, who="old")
    assert first is not None and "a" in first.observation.streams
    counting.delay = 0.3
    await asyncio.sleep(0.35)  # the next poll (0.3 s later) is now under way, slowly
    assert counting.polls[-1] == {"a"}
    poller.subscribe("new", Source(key="b"), 0.3)
    result = await poller.next_result(0, within=5, who="new")
    assert result is not None
    assert "b" in result.observation.streams, "a result taken without the new stream"
    assert "new" in result.served


@pytest.mark.e2e_variants("redis8")  # scheduling, not Redis: one version in the suite
async def test_each_subscription_keeps_its_own_schedule(poller: Poller) -> None:
    """Issue 13, finding 8: one group's pollInterval set the endpoint's (the fastest of all):
    a tenant at 100 ms made every stream on that Redis polled ten times a second. Counted, not
    timed: a slow machine makes both counts smaller, never the slow one larger."""
    counting = Counting(poller.gateway)
    poller.subscribe("fast", Source(key="fast"), 0.1)
    poller.subscribe("slow", Source(key="slow"), 2.0)
    poller.start()
    window = 3.0
    await asyncio.sleep(window)  # counting what happens in this time, on purpose
    fast, slow = counting.of("fast"), counting.of("slow")
    assert slow <= window / (2.0 * 0.9) + 2, f"slow polled {slow} times in {window}s"
    assert fast >= 3 * slow, f"fast {fast}, slow {slow}"
    assert poller.interval_of("fast") == 0.1 and poller.interval_of("slow") == 2.0
    # The janitor and retention read the last poll of their source, not the last poll.
    slow_latest = poller.latest_for(Source(key="slow"))
    assert slow_latest is not None and "slow" in slow_latest.observation.streams


@pytest.mark.e2e_variants("redis8")  # scheduling, not Redis: one version in the suite
async def test_poll_at_brings_one_subscribers_next_poll_forward_and_no_further(
    poller: Poller,
) -> None:
    """A decision due between two ticks (scale to zero once idleBeforeZero has passed, with a
    60 s pollInterval) asks for a poll then: it comes at that time (alone on the endpoint,
    nobody else's poll to join earlier), and nothing more until the next tick."""
    poller.subscribe("slow", Source(key="slow"), 60.0)
    poller.start()
    first = await poller.next_result(0, 10, "slow")
    assert first is not None
    while (more := await poller.next_result(first.seq, 1.0, "slow")) is not None:
        first = more  # the start-up polls: settled on its 60 s schedule from here
    asked = time.monotonic() + 1.0
    poller.poll_at("slow", asked)
    second = await poller.next_result(first.seq, 10, "slow")
    assert second is not None, "the poll asked for came (not at the 60 s tick)"
    assert time.monotonic() >= asked, "not early"
    assert await poller.next_result(second.seq, 2, "slow") is None, "and only that one"


@pytest.mark.e2e_variants("redis8")  # scheduling, not Redis: one version in the suite
async def test_subscribers_of_one_interval_share_polls_whenever_they_joined(
    poller: Poller,
) -> None:
    """Due times lie on one grid per interval: 20 subscribers that joined at different
    moments are polled together, one poll per interval (not twenty)."""
    counting = Counting(poller.gateway)
    poller.start()
    for i in range(20):
        poller.subscribe(f"g{i}", Source(key=f"k{i}"), 0.5)
        await asyncio.sleep(0.03)
    await asyncio.sleep(1.0)  # everyone's first, off-grid, poll is over
    before = len(counting.polls)
    window = 2.0
    await asyncio.sleep(window)  # counting what happens in this time, on purpose
    polls = len(counting.polls) - before
    assert polls <= window / (0.5 * 0.9) + 2, f"{polls} polls in {window}s"
    assert all(len(keys) == 20 for keys in counting.polls[before:]), "every poll takes all"


@pytest.mark.e2e_variants("redis8")  # scheduling, not Redis: one version in the suite
async def test_the_operator_minimum_interval_is_a_floor(redis_server: RedisServer) -> None:
    gateway = RedisGateway(Endpoint(url=redis_server.url))
    floored = Poller(gateway, Metrics(), min_interval=1.0)
    counting = Counting(gateway)
    try:
        floored.subscribe("eager", Source(key="a"), 0.1)
        assert floored.interval_of("eager") == 1.0
        floored.start()
        window = 3.0
        await asyncio.sleep(window)  # counting what happens in this time, on purpose
        assert counting.of("a") <= window / 0.9 + 2, counting.polls
    finally:
        await floored.stop()
        await gateway.close()


def discovery_tasks(endpoint: str) -> list[asyncio.Task[Any]]:
    names = (f"registry {endpoint}", f"notifications {endpoint}", f"absent {endpoint}")
    return [t for t in asyncio.all_tasks() if t.get_name() in names and not t.done()]


async def test_a_stopped_poller_starts_no_discovery_again_and_a_cut_release_is_finished_by_close(
    redis_server: RedisServer,
) -> None:
    """Both left a pattern's discovery tasks running past the operator's exit, until kopf gave
    up on them (5 s at every exit): a group unsubscribing after its stream's loop had
    stopped the poller restarted them, and a release cut short by kopf cancelling the
    daemon forgot a poller it had not finished stopping."""
    endpoints = Endpoints(Metrics())
    endpoint = Endpoint(url=redis_server.url)
    pollers: list[Poller] = []
    try:
        poller = await endpoints.acquire("stream", endpoint)
        pollers.append(poller)
        poller.subscribe("stream", Source(pattern="conv:*"))
        poller.subscribe("group", Source(pattern="conv:*"))
        assert discovery_tasks(poller.endpoint), "discovery runs for a pattern"
        await endpoints.release("stream")  # the last user of the gateway: the poller stops
        poller.unsubscribe("group")  # the group's loop ends after its stream's
        await asyncio.sleep(0)
        assert discovery_tasks(poller.endpoint) == [], "restarted on a stopped poller"

        # A release cancelled while it stops the poller (the daemon cancelled by kopf).
        poller = await endpoints.acquire("stream", endpoint)
        pollers.append(poller)
        poller.subscribe("stream", Source(pattern="conv:*"))
        assert discovery_tasks(poller.endpoint)
        release = asyncio.ensure_future(endpoints.release("stream"))
        await asyncio.sleep(0)
        release.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await release
        await endpoints.close()  # kopf's clean-up: whatever was left is stopped now
        assert discovery_tasks(poller.endpoint) == []
    finally:  # a failure above must not leave the tasks running past the test
        for each in pollers:
            await each.discoverer.stop()
        await endpoints.close()
