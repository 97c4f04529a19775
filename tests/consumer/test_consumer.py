"""The consumer loop on real Redis: its own history first and again every history_interval
(entries the janitor claims to it), failures left pending, other groups' copies
acknowledged unprocessed, streams appearing and disappearing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aredis
from e2e.cluster.processes import async_wait_until
from e2e.cluster.redis import RedisServer
from tests.consumer.conftest import recorder, running

from streamherd.consumer import Consumer, Entry, StreamClient
from streamherd.fields import DELIVERIES_FIELD, GROUP_FIELD, ORIGIN_ID_FIELD
from streamherd.keys import REGISTRY_FIELD, REGISTRY_KEY


def consumer(server: RedisServer, handler: Any, name: str = "c1", **options: Any) -> Consumer:
    client = StreamClient.from_url(server.url, group="g", consumer=name)
    options.setdefault("stream", "orders")
    return Consumer(client, handler=handler, **options)


async def pel(r: aredis.Redis, key: str = "orders") -> dict[str, tuple[str, int]]:
    rows = await r.xpending_range(key, "g", "-", "+", 1000)
    return {row["message_id"]: (row["consumer"], row["times_delivered"]) for row in rows}


async def test_its_own_history_first_then_new_entries(server: RedisServer, r: aredis.Redis) -> None:
    await r.xgroup_create("orders", "g", id="0", mkstream=True)
    held = [await r.xadd("orders", {"n": str(i)}) for i in range(3)]
    await r.xreadgroup("g", "c1", {"orders": ">"})  # a previous run of c1, killed
    fresh = [await r.xadd("orders", {"n": str(i)}) for i in range(3, 5)]
    seen, handle = recorder()
    c = consumer(server, handle)
    async with running(c):
        await async_wait_until(lambda: c.stats.acked == 5, 10, message=lambda: f"{seen}")
    assert [(e.id, e.deliveries) for e in seen] == [(i, 2) for i in held] + [(i, 1) for i in fresh]
    assert await pel(r) == {}, "all acknowledged"


async def test_entries_claimed_to_it_are_processed(server: RedisServer, r: aredis.Redis) -> None:
    """Strategy Claim: the janitor XCLAIMs (JUSTID) a dead consumer's entries to a live one;
    the live one finds them in its history (read every history_interval) and processes them,
    with their ids kept."""
    await r.xgroup_create("orders", "g", id="0", mkstream=True)
    ids = [await r.xadd("orders", {"n": str(i)}) for i in range(20)]
    await r.xreadgroup("g", "dead", {"orders": ">"})
    seen, handle = recorder()
    async with running(consumer(server, handle, history_interval=0.2)) as task:
        await asyncio.sleep(0.5)  # it is up, reading ">" (nothing new): shows nothing happens
        assert seen == [] and not task.done()
        await r.xclaim("orders", "g", "c1", 0, ids, justid=True)
        await async_wait_until(lambda: len(seen) == 20, 10, message=lambda: f"{len(seen)}")
    assert [e.id for e in seen] == ids, "claimed entries keep their ids"
    assert {e.deliveries for e in seen} == {2}, "the claim is no delivery; the read is"
    assert await pel(r) == {}


async def test_a_failure_stays_pending_and_only_deliveries_retry_it(
    server: RedisServer, r: aredis.Redis
) -> None:
    await r.xgroup_create("orders", "g", id="0", mkstream=True)
    poison = await r.xadd("orders", {"poison": "1"})
    good = await r.xadd("orders", {"n": "1"})
    tries: list[int] = []

    async def handle(entry: Entry) -> None:
        if entry.fields.get("poison"):
            tries.append(entry.deliveries)
            raise ValueError("cannot")

    # A ">" reader (no history reads) tries once and leaves it: no retry loop of its own.
    async with running(consumer(server, handle, history_interval=None)) as task:
        await async_wait_until(lambda: tries == [1], 10)
        await async_wait_until(lambda: r.xpending("orders", "g"), 5)
        await asyncio.sleep(1.0)  # shows it is never tried again
        assert tries == [1] and not task.done()
    assert await pel(r) == {poison: ("c1", 1)}, f"{good} acknowledged, the failure pending"
    # A history reader is handed it again every history_interval: each is a delivery Redis
    # counts (what the janitor dead-letters on), and the handler sees the count.
    async with running(consumer(server, handle, history_interval=0.1)):
        await async_wait_until(lambda: len(tries) >= 4, 10)
    assert tries[:4] == [1, 2, 3, 4]
    assert (await pel(r))[poison][1] >= 4


async def test_copies_for_other_groups_are_acknowledged_not_processed(
    server: RedisServer, r: aredis.Redis
) -> None:
    await r.xgroup_create("orders", "g", id="0", mkstream=True)
    await r.xadd(
        "orders", {ORIGIN_ID_FIELD: "1-0", DELIVERIES_FIELD: "3", GROUP_FIELD: "crm", "n": "x"}
    )
    ours = await r.xadd(
        "orders", {ORIGIN_ID_FIELD: "2-0", DELIVERIES_FIELD: "1", GROUP_FIELD: "g", "n": "y"}
    )
    seen, handle = recorder()
    c = consumer(server, handle)
    async with running(c):
        await async_wait_until(lambda: seen, 10)
        await async_wait_until(lambda: c.stats.acked == 1, 5)
    assert [(e.id, e.origin_id, e.deliveries, dict(e.fields)) for e in seen] == [
        (ours, "2-0", 2, {"n": "y"})
    ]
    assert c.stats.foreign_acked == 1 and await pel(r) == {}


async def test_waits_for_its_group_and_forgets_a_deleted_stream(
    server: RedisServer, r: aredis.Redis
) -> None:
    seen, handle = recorder()
    publisher = StreamClient(r)
    await publisher.publish("conv:1", {"n": "first"})
    c = consumer(server, handle, stream=None, pattern="conv:*", history_interval=0.2)
    async with running(c) as task:
        await asyncio.sleep(0.5)  # no group yet: nothing read, no error (shows it waits)
        assert seen == [] and not task.done() and c.streams.waiting == ["conv:1"]
        await r.xgroup_create("conv:1", "g", id="0")  # what the operator does
        await async_wait_until(lambda: len(seen) == 1, 10)
        await publisher.publish("conv:2", {"n": "second"})
        await r.xgroup_create("conv:2", "g", id="0")
        await async_wait_until(lambda: len(seen) == 2, 10)
        await r.delete("conv:1")
        await publisher.publish("conv:2", {"n": "third"})
        await async_wait_until(lambda: len(seen) == 3, 10)
        await async_wait_until(lambda: "conv:1" not in c.streams.followed, 15)
        assert not task.done()
    assert [e.fields["n"] for e in seen] == ["first", "second", "third"]


async def test_a_key_announced_before_its_stream_exists_is_read_once_it_does(
    server: RedisServer, r: aredis.Redis
) -> None:
    """A publisher that registers a key before its first XADD (not the SDK's order, but
    nothing forbids it; the flagship scenario's burst does it): a pattern consumer that
    checks the key in between finds no stream. It must wait for it, not forget it: a
    forgotten key is never learned again, and the janitor may claim that stream's entries to
    this consumer, which would then never read them (found as an entry stuck in a live
    consumer's PEL for 150 s in the flagship scenario)."""
    seen, handle = recorder()
    c = consumer(server, handle, stream=None, pattern="conv:*", history_interval=0.2)
    async with running(c) as task:
        await async_wait_until(lambda: c.following.position is not None, 10)
        announced = await r.xadd(REGISTRY_KEY, {REGISTRY_FIELD: "conv:7"})
        # Read from the registry and checked once (no stream yet):
        await async_wait_until(
            lambda: (
                c.following.position == announced
                and "conv:7" not in c.streams.due(time.monotonic())
            ),
            10,
        )
        assert "conv:7" not in c.streams.followed and not task.done()
        await r.xadd("conv:7", {"n": "late"})
        await r.xgroup_create("conv:7", "g", id="0")
        await async_wait_until(lambda: len(seen) == 1, 10, message=lambda: f"{c.streams.waiting}")
    assert [e.fields["n"] for e in seen] == ["late"]


async def test_a_key_that_never_appears_is_forgotten_after_the_grace(
    server: RedisServer, r: aredis.Redis
) -> None:
    """Waiting for announced keys costs memory only for a while: one absent for longer than
    ``absent_grace`` (deleted calls, announcements of streams never written) is dropped."""
    seen, handle = recorder()
    c = consumer(server, handle, stream=None, pattern="conv:*")
    c.streams.absent_grace = 0.5
    async with running(c):
        await async_wait_until(lambda: c.following.position is not None, 10)
        await r.xadd(REGISTRY_KEY, {REGISTRY_FIELD: "conv:never"})
        await async_wait_until(lambda: "conv:never" in c.streams.waiting, 10)
        await async_wait_until(lambda: "conv:never" not in c.streams.waiting, 10)
    assert seen == []


async def test_a_sync_handler_runs_in_a_thread(server: RedisServer, r: aredis.Redis) -> None:
    await r.xgroup_create("orders", "g", id="0", mkstream=True)
    await r.xadd("orders", {"n": "1"})
    seen: list[str] = []
    c = consumer(server, lambda e: seen.append(e.fields["n"]))
    async with running(c):
        await async_wait_until(lambda: c.stats.acked == 1, 10)
    assert seen == ["1"]


async def test_a_redis_restart_is_waited_out(redis_server_factory: Any) -> None:
    """Redis goes away (and comes back empty: no persistence here): the consumer keeps
    retrying, then reads the streams created afresh, the pattern's new calls included."""
    server = redis_server_factory("7.0")
    r = aredis.Redis.from_url(server.url, decode_responses=True)
    publisher = StreamClient(r)
    await publisher.publish("conv:1", {"n": "before"})
    await r.xgroup_create("conv:1", "g", id="0")
    seen, handle = recorder()
    c = consumer(server, handle, stream=None, pattern="conv:*", history_interval=0.2)
    async with running(c) as task:
        await async_wait_until(lambda: len(seen) == 1, 10)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(1.0)  # down for a while: shows the consumer does not give up
        assert not task.done()
        await asyncio.to_thread(server.start)
        publisher = StreamClient(aredis.Redis.from_url(server.url, decode_responses=True))
        await publisher.publish("conv:2", {"n": "after"})
        await publisher.redis.xgroup_create("conv:2", "g", id="0")
        await async_wait_until(lambda: len(seen) == 2, 20, message=lambda: f"{seen}")
        assert not task.done()
        await publisher.close()
    await r.aclose()
    assert [e.fields["n"] for e in seen] == ["before", "after"]


async def test_a_key_that_stops_being_a_stream_is_forgotten(
    server: RedisServer, r: aredis.Redis
) -> None:
    seen, handle = recorder()
    for key in ("conv:1", "conv:2"):
        await r.xadd(key, {"n": key})
        await r.xgroup_create(key, "g", id="0")
    c = consumer(server, handle, stream=None, pattern="conv:*")
    async with running(c) as task:
        await async_wait_until(lambda: len(seen) == 2, 10)
        await r.delete("conv:1")
        await r.set("conv:1", "not a stream")
        await r.xadd("conv:2", {"n": "again"})
        await async_wait_until(lambda: len(seen) == 3, 10)
        await async_wait_until(lambda: c.streams.followed == ["conv:2"], 10)
        await r.xadd("conv:2", {"n": "still"})
        await async_wait_until(lambda: len(seen) == 4, 10)
        assert not task.done()
