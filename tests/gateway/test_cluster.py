"""Redis Cluster: 3 primaries on loopback; streams spread over slots."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from e2e.cluster.redis import VERSIONS
from e2e.cluster.redis import RedisCluster as Cluster
from redis.asyncio.cluster import ClusterNode, RedisCluster

from streamherd.gateway import Endpoint, GroupOutcome, RedisGateway, ScanState


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: f"redis-{v}")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    started = Cluster(version=request.param).start()
    yield started
    started.cleanup()


@pytest.fixture
async def rc(cluster: Cluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.aclose()


@pytest.fixture
async def gateway(cluster: Cluster, rc: RedisCluster) -> AsyncIterator[RedisGateway]:
    gw = RedisGateway(Endpoint(url=cluster.url, cluster=True))
    yield gw
    await gw.close()


KEYS = [f"conv:{i}" for i in range(300)]


async def populate(rc: RedisCluster) -> None:
    for i, key in enumerate(KEYS):
        for _ in range(i % 5):
            await rc.xadd(key, {"t": "x"})


async def test_streams_really_spread_over_every_node(rc: RedisCluster) -> None:
    nodes = Counter(rc.get_node_from_key(key).name for key in KEYS)
    assert len(nodes) == 3 and min(nodes.values()) > 50


async def test_groups_created_across_slots_and_observed_like_redis_says(
    gateway: RedisGateway, rc: RedisCluster
) -> None:
    await populate(rc)
    results = await gateway.ensure_groups(KEYS, "brain", "0", create_stream=True)
    assert all(getattr(r, "outcome", None) is GroupOutcome.CREATED for r in results)
    for key in KEYS[:50]:
        await rc.xreadgroup("brain", "pod-a", {key: ">"}, count=1)

    observed = await gateway.observe(KEYS)
    assert observed.problem is None and len(observed.streams) == len(KEYS)
    for i, key in enumerate(KEYS):
        raw = (await rc.xinfo_groups(key))[0]
        state = observed.group(key, "brain")
        assert state is not None
        assert (state.pending, state.lag.value, state.consumers) == (
            raw["pending"],
            raw["lag"],
            raw["consumers"],
        )
        assert state.backlog.value == i % 5


async def test_one_pipeline_per_node_per_poll(
    gateway: RedisGateway, rc: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    await populate(rc)
    await gateway.ensure_groups(KEYS, "brain", "0", create_stream=True)
    calls: Counter[str] = Counter()
    original = ClusterNode.execute_pipeline

    async def counting(self: ClusterNode, commands: Any) -> Any:
        calls[self.name] += 1
        return await original(self, commands)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", counting)
    observed = await gateway.observe(KEYS)
    assert observed.problem is None
    assert len(calls) == 3 and set(calls.values()) == {1}, calls


async def test_same_slot_keys_share_a_script_call(gateway: RedisGateway, rc: RedisCluster) -> None:
    keys = [f"{{call-7}}:{part}" for part in ("audio", "text", "events")]
    for key in keys:
        await rc.xadd(key, {"t": "x"})
    batches = gateway._batches(keys + KEYS[:3])
    assert keys in batches, "hash-tagged keys of one call go together"
    observed = await gateway.observe(keys)
    assert all(observed.streams[key].length == 1 for key in keys)


async def test_discovery_scans_every_primary(gateway: RedisGateway, rc: RedisCluster) -> None:
    await populate(rc)
    for key in KEYS:
        await rc.xadd(key, {"t": "x"})  # make sure every key exists
    for i in range(100):
        await rc.set(f"conv:meta:{i}", "not a stream")
    state = ScanState.start("conv:*")
    while not await gateway.scan_streams(state, budget=300):
        pass
    assert state.found == set(KEYS)
    assert len(state.cursors) == 0 and state.complete_passes == 1
