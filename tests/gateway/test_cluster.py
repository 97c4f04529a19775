"""Redis Cluster: 3 primaries on loopback; streams spread over slots."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from tests.gateway.helpers import lag_of

from streamherd.gateway import GroupOutcome, RedisGateway, ScanState

KEYS = [f"conv:{i}" for i in range(300)]


async def populate(cluster_client: RedisCluster) -> None:
    for i, key in enumerate(KEYS):
        for _ in range(i % 5):
            await cluster_client.xadd(key, {"t": "x"})


async def test_streams_really_spread_over_every_node(cluster_client: RedisCluster) -> None:
    nodes = Counter(cluster_client.get_node_from_key(key).name for key in KEYS)
    assert len(nodes) == 3 and min(nodes.values()) > 50


async def test_groups_created_across_slots_and_observed_like_redis_says(
    cluster_gateway: RedisGateway, cluster_client: RedisCluster
) -> None:
    await populate(cluster_client)
    results = await cluster_gateway.ensure_groups(KEYS, "brain", "0", create_stream=True)
    assert all(getattr(r, "outcome", None) is GroupOutcome.CREATED for r in results)
    for key in KEYS[:50]:
        await cluster_client.xreadgroup("brain", "pod-a", {key: ">"}, count=1)

    observed = await cluster_gateway.observe(KEYS)
    assert observed.problem is None and len(observed.streams) == len(KEYS)
    for i, key in enumerate(KEYS):
        raw = (await cluster_client.xinfo_groups(key))[0]
        state, lag = observed.group(key, "brain"), lag_of(observed, key, "brain")
        assert state is not None
        assert (state.pending, lag.value, state.consumers) == (
            raw["pending"],
            raw["lag"],
            raw["consumers"],
        )
        assert lag.value + state.pending == i % 5  # the backlog


async def test_one_pipeline_per_node_per_poll(
    cluster_gateway: RedisGateway, cluster_client: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    await populate(cluster_client)
    await cluster_gateway.ensure_groups(KEYS, "brain", "0", create_stream=True)
    calls: Counter[str] = Counter()
    original = ClusterNode.execute_pipeline

    async def counting(self: ClusterNode, commands: Any) -> Any:
        calls[self.name] += 1
        return await original(self, commands)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", counting)
    observed = await cluster_gateway.observe(KEYS)
    assert observed.problem is None
    assert len(calls) == 3 and set(calls.values()) == {1}, calls


async def test_same_slot_keys_share_a_script_call(
    cluster_gateway: RedisGateway, cluster_client: RedisCluster
) -> None:
    keys = [f"{{call-7}}:{part}" for part in ("audio", "text", "events")]
    for key in keys:
        await cluster_client.xadd(key, {"t": "x"})
    batches = cluster_gateway._batches(keys + KEYS[:3])
    assert keys in batches, "hash-tagged keys of one call go together"
    observed = await cluster_gateway.observe(keys)
    assert all(observed.streams[key].length == 1 for key in keys)


async def test_discovery_scans_every_primary(
    cluster_gateway: RedisGateway, cluster_client: RedisCluster
) -> None:
    await populate(cluster_client)
    for key in KEYS:
        await cluster_client.xadd(key, {"t": "x"})  # make sure every key exists
    for i in range(100):
        await cluster_client.set(f"conv:meta:{i}", "not a stream")
    state = ScanState.start("conv:*")
    while not await cluster_gateway.scan_streams(state, budget=300):
        pass
    assert state.found == set(KEYS)
    assert len(state.cursors) == 0 and state.complete_passes == 1


async def connections_received(cluster_client: RedisCluster) -> dict[str, int]:
    return {
        node.name: int(
            (await cluster_client.info("stats", target_nodes=node))["total_connections_received"]
        )
        for node in cluster_client.get_primaries()
    }


@pytest.mark.parametrize("streams", [1, 3, 1000])
async def test_the_wake_up_read_over_many_slots_is_bounded(
    cluster_gateway: RedisGateway, cluster_client: RedisCluster, streams: int
) -> None:
    """The waker's read over a sleeping group's streams (what wakes brain from zero): a
    blocking read waits on one hash slot, so over 1,000 call streams (about 1,000 slots) it
    must not be a blocked connection per slot (redis-py's pool stops at 100 per node: it
    failed with MaxConnectionsError, every time), nor blocked reads cancelled and reopened
    at each wake-up. Keys of several slots are read without blocking, per slot, pipelined
    per node, a few times a second: an entry after the group's position ends the wait, and
    no wait opens a connection."""
    keys = [f"conv:{i}" for i in range(streams)]
    pipe = cluster_client.pipeline()
    for key in keys:
        pipe.xadd(key, {"t": "old"})
        pipe.xgroup_create(key, "brain", id="$")
    await pipe.execute()
    positions = await cluster_gateway.group_positions(keys, "brain")
    assert not await cluster_gateway.wait_for_entries(positions, 300), "nothing new"
    before = await connections_received(cluster_client)
    target = keys[-1]

    async def later() -> str:
        await asyncio.sleep(0.3)
        return str(await cluster_client.xadd(target, {"t": "new"}))

    added = asyncio.create_task(later())
    moved = await cluster_gateway.wait_for_entries(positions, 5000)
    assert moved == {target: await added}
    for _ in range(3):
        await cluster_gateway.wait_for_entries({**positions, **moved}, 200)
    after = await connections_received(cluster_client)
    opened = {name: after[name] - before[name] for name in after}
    assert max(opened.values()) <= 1, f"connections opened per node over 4 waits: {opened}"
