"""Redis Cluster (3 primaries): dead-lettering with the default key works (same hash slot);
a configured key in another slot is refused, said so (Event, metric), and nothing is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from tests.janitor.helpers import recovery, settings

from streamherd.controller.janitor import Janitor
from streamherd.controller.janitor_pass import Progress, run_pass
from streamherd.decisions.recovery import Pods
from streamherd.fields import ORIGIN_ID_FIELD
from streamherd.gateway import RedisGateway
from streamherd.gateway.recovery import BatchCall, recover_batches
from streamherd.kube import KubeClient
from streamherd.metrics import Metrics


async def stranded(cluster_client: RedisCluster, key: str, poison: int, good: int) -> list[str]:
    """Entries delivered to a consumer whose pod is gone; ``poison`` of them twice."""
    ids = [await cluster_client.xadd(key, {"msg": str(i)}) for i in range(poison + good)]
    await cluster_client.xgroup_create(key, "g", "0")
    await cluster_client.xreadgroup("g", "web-h-zzzzz", {key: ">"})
    await cluster_client.xreadgroup("g", "web-h-zzzzz", {key: "0"}, count=poison)
    return [str(i) for i in ids]


async def no_pods() -> None:
    return None


async def test_dead_letters_go_to_the_default_key_in_the_streams_slot(
    cluster_gateway: RedisGateway, cluster_client: RedisCluster
) -> None:
    keys = ["orders", "{tenant-1}.orders"]
    ids = {key: await stranded(cluster_client, key, poison=2, good=3) for key in keys}
    assert len({cluster_client.get_node_from_key(k).name for k in keys}) == 2, "on two nodes"

    spec = recovery(min_idle="1ms", max_deliveries=2)
    outcome = await run_pass(cluster_gateway, keys, "g", spec, pods=no_pods, progress=Progress())

    assert (outcome.dead_lettered, outcome.requeued, outcome.refused) == (4, 6, {})
    assert outcome.dead_letter_keys == {"{orders}:dlq", "{tenant-1}.orders:dlq"}
    for key, dlq in [("orders", "{orders}:dlq"), ("{tenant-1}.orders", "{tenant-1}.orders:dlq")]:
        assert key_slot(dlq.encode()) == key_slot(key.encode())
        records = [f[ORIGIN_ID_FIELD] for _, f in await cluster_client.xrange(dlq)]
        assert records == ids[key][:2]
        assert not (await cluster_client.xpending(key, "g"))["pending"]


async def test_a_dead_letter_key_in_another_slot_is_refused_and_reported(
    cluster_gateway: RedisGateway,
    cluster_client: RedisCluster,
    kube_api: Any,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await stranded(cluster_client, "orders", poison=2, good=3)
    assert key_slot(b"orders-dlq") != key_slot(b"orders")
    body = kube_api.create(
        {
            "apiVersion": "streamherd.io/v1alpha1",
            "kind": "ConsumerGroup",
            "metadata": {"name": "orders-g", "namespace": "default"},
            "spec": {"streamRef": {"name": "orders"}, "groupName": "g"},
        }
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    kube, metrics = KubeClient.from_environment(), Metrics()
    janitor = Janitor(kube, metrics, body)
    spec = recovery(min_idle="1ms", max_deliveries=2, dead_letter={"stream": "orders-dlq"})

    async def pod_gone() -> Pods:
        return Pods("web", frozenset(), frozenset(), gone=frozenset({"web-h-zzzzz"}))

    try:
        outcome = await janitor.run(cluster_gateway, ["orders"], "g", spec, pod_gone)
        again = await janitor.run(cluster_gateway, ["orders"], "g", spec, pod_gone)
        assert await kube.drain(10), "its Events were not sent"  # queued, not awaited
    finally:
        await kube.close()

    assert outcome.held == 2 and outcome.dead_lettered == 0 and outcome.requeued == 3
    assert again.held == 2, "still pending, still not dead-lettered (and counted once)"
    assert outcome.removed == again.removed == [], "its pod is gone, but its PEL is not empty"
    assert (await cluster_client.xpending("orders", "g"))["pending"] == 2, "poison kept, not lost"
    assert await cluster_client.exists("orders-dlq") == 0
    problem = outcome.refused["orders"]
    assert "orders-dlq" in problem and "'{orders}:dlq'" in problem
    events = [
        e for e in kube_api.list("events", "default") if e["involvedObject"]["name"] == "orders-g"
    ]
    assert [(e["type"], e["reason"], e["message"]) for e in events] == [
        ("Warning", "CrossSlot", problem)
    ], "said once, not at every pass"
    labels = {"namespace": "default", "consumergroup": "orders-g", "group": "g"}
    sample = metrics.registry.get_sample_value
    assert sample("streamherd_janitor_dead_letter_blocked", labels) == 1
    assert sample("streamherd_janitor_poison_held", labels) == 2
    status = kube_api.get("consumergroups.streamherd.io", "default", "orders-g")["status"]
    assert (status["recovered"], status["deadLettered"]) == (3, 0)


async def test_scripts_lost_on_one_node_are_loaded_and_only_its_calls_sent_again(
    cluster_gateway: RedisGateway, cluster_client: RedisCluster
) -> None:
    """A failover or restart of one primary loses its scripts: the calls on the other nodes
    ran and are not sent again; those on that node get NOSCRIPT, the script is loaded, and
    they run once."""
    keys = [f"orders:{i}" for i in range(12)]
    for key in keys:
        await stranded(cluster_client, key, poison=1, good=2)
    await cluster_gateway.connect()
    node = cluster_client.get_node_from_key(keys[0])
    on_node = [k for k in keys if cluster_client.get_node_from_key(k).name == node.name]
    assert 0 < len(on_node) < len(keys)
    await cluster_client.execute_command("SCRIPT", "FLUSH", target_nodes=node)
    before = cluster_gateway.round_trips

    calls = [BatchCall(key, "{" + key + "}:dlq", consumer="web-h-zzzzz") for key in keys]
    batches = await recover_batches(cluster_gateway, "g", settings(max_deliveries=5), calls)

    assert [getattr(b, "requeued", b) for b in batches] == [3] * len(keys)
    assert cluster_gateway.round_trips - before == 2, "the pipeline, then only the NOSCRIPT calls"
    for key in keys:
        origins = [f[ORIGIN_ID_FIELD] for _, f in (await cluster_client.xrange(key))[3:]]
        assert len(origins) == len(set(origins)) == 3, "each entry re-queued once"
