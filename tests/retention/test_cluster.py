"""Retention on a Redis Cluster (3 primaries): one script per stream, pipelined per node;
the floor, idle deletion (UNLINK inside the script) and Delete's check work on every node."""

from __future__ import annotations

import time

from redis.asyncio.cluster import RedisCluster

from streamherd.gateway import RedisGateway
from streamherd.gateway.retention import retain, unlink_managed
from streamherd.observations import ManagedGroup, RetentionRules


async def test_streams_on_every_node_are_trimmed_to_their_floor_or_deleted(
    cluster_gateway: RedisGateway, cluster_client: RedisCluster
) -> None:
    now_ms = int(time.time() * 1000)
    keys = [f"conv:{i}" for i in range(9)]
    assert len({cluster_client.get_node_from_key(k).name for k in keys}) == 3
    for index, key in enumerate(keys):
        ids = [
            await cluster_client.xadd(key, {"n": n}, id=f"{now_ms - 120_000 + n}-0")
            for n in range(50)
        ]
        await cluster_client.xgroup_create(key, "brain", "0")
        delivered = await cluster_client.xreadgroup("brain", "c", {key: ">"})
        done = index % 3 == 0  # a third of the calls are fully consumed
        acked = ids if done else ids[:20]
        assert [e for e, _ in delivered[0][1]] == ids
        await cluster_client.xack(key, "brain", *acked)
    rules = RetentionRules(max_age_ms=60_000, approximate=False, delete_idle_after_ms=60_000)
    steps = {
        s.key: s for s in await retain(cluster_gateway, keys, rules, [ManagedGroup("brain", "0")])
    }
    for index, key in enumerate(keys):
        if index % 3 == 0:
            assert steps[key].deleted and not await cluster_client.exists(key)
        else:
            assert steps[key].trimmed == 20 and await cluster_client.xlen(key) == 30
            assert [h.group for h in steps[key].holds] == ["brain"]
    left = [k for i, k in enumerate(keys) if i % 3]
    outcome = await unlink_managed(cluster_gateway, left, ["brain"])
    assert set(outcome.values()) == {"deleted"}
    assert [k for k in left if await cluster_client.exists(k)] == []
