"""``StreamClient`` on real Redis: publish (registry, no trim before a group), read_group
(foreign copies, history, deliveries), ack, claim, pending, info."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis

from streamherd.consumer import HISTORY, NoGroupError, StreamClient
from streamherd.fields import DELIVERIES_FIELD, GROUP_FIELD, ORIGIN_ID_FIELD
from streamherd.keys import REGISTRY_FIELD, REGISTRY_KEY


async def registered(r: aredis.Redis) -> list[str]:
    return [f[REGISTRY_FIELD] for _, f in await r.xrange(REGISTRY_KEY)]


async def test_publish_registers_a_key_the_first_time_only(
    client: StreamClient, r: aredis.Redis
) -> None:
    for call in ("conv:1", "conv:2", "conv:1", "conv:2", "conv:3"):
        await client.publish(call, {"msg": "x"})
    assert await registered(r) == ["conv:1", "conv:2", "conv:3"]
    other = StreamClient(client.redis)  # another publisher (pod) announces what it writes
    await other.publish("conv:1", {"msg": "y"})
    assert await registered(r) == ["conv:1", "conv:2", "conv:3", "conv:1"]
    quiet = StreamClient(client.redis, register=False)
    await quiet.publish("conv:9", {"msg": "z"})
    assert "conv:9" not in await registered(r)


async def test_publish_never_trims_a_stream_before_it_has_a_group(
    client: StreamClient, r: aredis.Redis
) -> None:
    """A pattern group starts on a new stream at the ConsumerGroup's creation time: its
    first events must still be there when the operator creates the group."""
    first = [await client.publish("conv:1", {"n": str(i)}, maxlen=10) for i in range(500)]
    assert await r.xlen("conv:1") == 500, "no group yet: nothing trimmed"
    await r.xgroup_create("conv:1", "g", id="0")  # the operator gets to the new stream
    assert [e.id for e in await client.read_group(["conv:1"], count=1000)] == first
    for i in range(500, 1000):
        await client.publish("conv:1", {"n": str(i)}, maxlen=10)
    assert await r.xlen("conv:1") < 200, "trimmed (approximately) once a group exists"
    ((kept, _),) = await r.xrange("conv:1", count=1)
    assert kept not in first, "the cap applies after the group: only then"
    await client.publish("conv:1", {"n": "exact"}, maxlen=10, approximate=False)
    assert await r.xlen("conv:1") == 10


async def test_publish_cap_is_the_client_default(server: object, r: aredis.Redis) -> None:
    capped = StreamClient(r, maxlen=5, approximate=False)
    await r.xgroup_create("orders", "g", id="0", mkstream=True)
    for i in range(20):
        await capped.publish("orders", {"n": str(i)})
    assert await r.xlen("orders") == 5


async def test_copies_for_another_group_are_acknowledged_never_returned(
    client: StreamClient, r: aredis.Redis
) -> None:
    await r.xgroup_create("conv:1", "g", id="0", mkstream=True)
    mine = await r.xadd(
        "conv:1",
        {ORIGIN_ID_FIELD: "1-1", DELIVERIES_FIELD: "2", GROUP_FIELD: "g", "msg": "mine"},
    )
    theirs = await r.xadd(
        "conv:1",
        {ORIGIN_ID_FIELD: "1-2", DELIVERIES_FIELD: "4", GROUP_FIELD: "crm", "msg": "theirs"},
    )
    plain = await r.xadd("conv:1", {"msg": "plain"})
    entries = await client.read_group(["conv:1"])
    assert [(e.id, e.origin_id, e.deliveries, dict(e.fields)) for e in entries] == [
        (mine, "1-1", 3, {"msg": "mine"}),
        (plain, plain, 1, {"msg": "plain"}),
    ]
    pending = {p.id for p in await client.pending("conv:1")}
    assert pending == {mine, plain}, f"crm's copy {theirs} was acknowledged by g"


async def test_history_reads_carry_redis_delivery_counts(
    client: StreamClient, r: aredis.Redis
) -> None:
    await r.xgroup_create("orders", "g", id="0", mkstream=True)
    ids = [await r.xadd("orders", {"n": str(i)}) for i in range(3)]
    assert [e.deliveries for e in await client.read_group(["orders"])] == [1, 1, 1]
    again = await client.read_group({"orders": HISTORY})
    assert [(e.id, e.deliveries) for e in again] == [(i, 2) for i in ids]
    await r.xdel("orders", ids[1])
    third = await client.read_group({"orders": HISTORY})
    assert [(e.id, e.deliveries) for e in third] == [(ids[0], 3), (ids[2], 3)]
    assert {p.id for p in await client.pending("orders")} == {ids[0], ids[2]}, (
        "the deleted entry was acknowledged"
    )
    assert await client.ack("orders", ids[0]) == 1
    summary = await client.pending_summary("orders")
    assert (summary.count, summary.lowest_id, dict(summary.consumers)) == (1, ids[2], {"c1": 1})


async def test_claim_info_and_a_missing_group(client: StreamClient, r: aredis.Redis) -> None:
    await r.xgroup_create("orders", "g", id="0", mkstream=True)
    ids = [await r.xadd("orders", {"n": str(i)}) for i in range(3)]
    await r.xreadgroup("g", "dead", {"orders": ">"})
    claimed = await client.claim("orders", ids[:2])
    assert [(e.id, e.deliveries) for e in claimed] == [(ids[0], 2), (ids[1], 2)]
    owners = {p.id: p.consumer for p in await client.pending("orders")}
    assert owners == {ids[0]: "c1", ids[1]: "c1", ids[2]: "dead"}
    info = await client.info("orders")
    assert (info.length, info.first_id, info.last_id) == (3, ids[0], ids[2])
    group = info.group("g")
    assert group is not None and (group.pending, group.lag, group.consumers) == (3, 0, 2)
    await r.xadd("other", {"n": "1"})
    with pytest.raises(NoGroupError) as caught:
        await client.read_group(["orders", "other"])
    assert caught.value.key == "other"
