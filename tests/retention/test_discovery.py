"""Discovery that does not depend on keyspace size: the registry of new streams, keyspace
notifications (standalone and Redis Cluster, one subscription per primary), SCAN only as the
reconcile; and a new call's group exists within a second with a million unrelated keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis
from e2e.cluster.processes import OperatorProcess, async_wait_until, wait_until
from e2e.cluster.redis import RedisServer
from redis.asyncio.cluster import RedisCluster
from tests.harness import Harness, make_harness

from streamherd.controller.polling import Poller, Source
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.gateway.discovery import NotificationMode, notification_mode
from streamherd.keys import REGISTRY_FIELD, REGISTRY_KEY
from streamherd.metrics import Metrics


@pytest.mark.parametrize(
    ("flags", "mode"),
    [
        (None, NotificationMode.UNKNOWN),
        ("", NotificationMode.OFF),
        ("KEA", NotificationMode.KEYSPACE),  # A: every class but n... and t is in it
        ("Kn", NotificationMode.KEYSPACE),
        ("Kt", NotificationMode.KEYSPACE),
        ("En", NotificationMode.KEYEVENT),
        ("Ex", NotificationMode.OFF),
        ("Kg", NotificationMode.OFF),
        ("EA", NotificationMode.OFF),  # A lacks n; keyevent needs the new-key class
    ],
)
def test_what_notify_keyspace_events_lets_discovery_use(
    flags: str | None, mode: NotificationMode
) -> None:
    assert notification_mode(flags) is mode


@pytest.fixture
async def r(redis_server: RedisServer) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def poller_on(url: str, *, cluster: bool = False, **options: Any) -> Poller:
    poller = Poller(RedisGateway(Endpoint(url=url, cluster=cluster)), Metrics(), **options)
    poller.subscribe("calls", Source(pattern="conv:*"), 60)
    return poller


async def stop(poller: Poller) -> None:
    await poller.stop()
    await poller.gateway.close()


async def test_the_registry_teaches_new_streams_at_once(
    redis_server: RedisServer, r: aredis.Redis
) -> None:
    await r.xadd("conv:before", {"turn": 0})  # registered before the operator started
    await r.xadd(REGISTRY_KEY, {REGISTRY_FIELD: "conv:before"})
    poller = await poller_on(redis_server.url, notifications=False)
    try:
        await async_wait_until(lambda: poller.knows("conv:before"), 30)
        for key in ("conv:1", "conv:1:dlq", "orders"):
            await r.xadd(key, {"turn": 0})
            await r.xadd(REGISTRY_KEY, {REGISTRY_FIELD: key})
        await r.xadd(REGISTRY_KEY, {REGISTRY_FIELD: "conv:never-written"})
        # No poll runs here (the poller is not started), so no SCAN: only the registry can
        # teach it. How fast is measured side by side by `make bench-discovery`, not here.
        await async_wait_until(lambda: poller.knows("conv:1"), 30)
        assert not poller.knows("conv:1:dlq"), "auxiliary keys are never sources"
        assert not poller.knows("orders") and not poller.knows("conv:never-written")
        assert poller.discoverer.describe().startswith("registry")
    finally:
        await stop(poller)


async def test_a_key_announced_before_its_stream_exists_is_learned_once_it_does(
    redis_server: RedisServer, r: aredis.Redis
) -> None:
    """A publisher may register a key before its first XADD: discovery must not drop the key
    for good (only SCAN would find it then) but check it again within its grace. A key that
    never appears is forgotten after the grace; a key of another type at once."""
    poller = await poller_on(redis_server.url, notifications=False)
    poller.discoverer.absent_grace = 3.0
    try:
        await r.set("conv:string", "not a stream")
        for key in ("conv:ahead", "conv:never", "conv:string"):
            await r.xadd(REGISTRY_KEY, {REGISTRY_FIELD: key})
        await async_wait_until(lambda: "conv:ahead" in poller.discoverer.absent, 30)
        assert "conv:string" not in poller.discoverer.absent
        await r.xadd("conv:ahead", {"turn": 0})
        await async_wait_until(lambda: poller.knows("conv:ahead"), 30)  # no poll, so no SCAN
        await async_wait_until(lambda: poller.discoverer.absent == [], 30)
        assert not poller.knows("conv:never") and not poller.knows("conv:string")
    finally:
        await stop(poller)


@pytest.mark.parametrize("flags", ["Kn", "En", "KEt"])
async def test_keyspace_notifications_teach_new_streams_when_enabled(
    redis_server: RedisServer, r: aredis.Redis, flags: str
) -> None:
    await r.config_set("notify-keyspace-events", flags)
    poller = await poller_on(redis_server.url, registry=False)
    try:
        await async_wait_until(lambda: poller.discoverer.mode is not None, 30)
        await r.set("conv:meta", "a string")  # a new key, not a stream
        await r.xadd("conv:7", {"turn": 0})
        await async_wait_until(lambda: poller.knows("conv:7"), 30)  # no poll, so no SCAN
        assert not poller.knows("conv:meta")
        assert f"notify-keyspace-events={''.join(sorted(flags))}" in poller.discoverer.describe()
    finally:
        await stop(poller)


async def test_without_notifications_discovery_says_so_and_the_scan_still_finds_keys(
    redis_server: RedisServer, r: aredis.Redis
) -> None:
    poller = await poller_on(redis_server.url, registry=False)
    try:
        await async_wait_until(lambda: poller.discoverer.mode is NotificationMode.OFF, 30)
        await r.xadd("conv:9", {"turn": 0})
        result = await poller.poll_once()  # the SCAN in every poll: the slow reconcile
        assert result.keys_of(Source(pattern="conv:*")) == ("conv:9",)
        assert "no notifications" in poller.discoverer.describe()
    finally:
        await stop(poller)


async def test_on_a_cluster_notifications_come_from_every_primary(
    redis_cluster: Any, cluster_client: RedisCluster
) -> None:
    await cluster_client.config_set(
        "notify-keyspace-events", "Kn", target_nodes=RedisCluster.PRIMARIES
    )
    poller = await poller_on(redis_cluster.url, cluster=True, registry=False)
    keys = [f"conv:{i}" for i in range(12)]
    assert len({cluster_client.get_node_from_key(k).name for k in keys}) == 3
    try:
        await async_wait_until(lambda: poller.discoverer.mode is NotificationMode.KEYSPACE, 30)
        for key in keys:
            await cluster_client.xadd(key, {"turn": 0})
        # 30 s, as every wait on the poller here (no SCAN runs in these tests: the deadline only
        # bounds the wait). It failed at 5 s and at 30 s when the discoverer said KEYSPACE before
        # its subscriptions were active: the keys written in between were never notified.
        await async_wait_until(lambda: all(poller.knows(k) for k in keys), 30)
    finally:
        await stop(poller)


async def test_on_a_cluster_the_registry_is_read_too(
    redis_cluster: Any, cluster_client: RedisCluster
) -> None:
    poller = await poller_on(redis_cluster.url, cluster=True, notifications=False)
    try:
        for key in ("conv:a", "conv:b", "conv:c"):
            await cluster_client.xadd(key, {"turn": 0})
            await cluster_client.xadd(REGISTRY_KEY, {REGISTRY_FIELD: key})
        await async_wait_until(
            lambda: all(poller.knows(k) for k in ("conv:a", "conv:b", "conv:c")), 5
        )
    finally:
        await stop(poller)


# ------------------------------------------------------------------ the operator


@pytest.fixture(params=["7.0", "8.2"], ids=["redis7.0", "redis8.2"])
def crowded(
    request: pytest.FixtureRequest,
    cluster_objects: Any,
    kubeconfig: Path,
    kube_namespace: str,
    kube_tier: str,
    run_as_operator: Callable[..., OperatorProcess],
    redis_server_factory: Callable[..., RedisServer],
) -> Iterator[Harness]:
    """A harness whose Redis holds a million unrelated keys (DEBUG POPULATE: ~2 s), in the
    test's namespace like every harness (so it runs on a shared real cluster too)."""
    server = redis_server_factory(request.param, extra=(("enable-debug-command", "yes"),))
    h = make_harness(request, server, cluster_objects, kube_namespace, kube_tier, run_as_operator)
    h.r.execute_command("DEBUG", "POPULATE", 1_000_000, "session")
    yield h
    if h._redis is not None:
        h._redis.close()


@pytest.mark.e2e_variants("redis8.2")  # 7.0 in the suite: the registry path is the same
def test_a_new_calls_group_exists_long_before_a_scan_could_reach_it(crowded: Harness) -> None:
    """SCAN alone would need ~100 polls (10,000 keys each, 2 s apart) to reach a new key
    behind its cursor; the registry and keyspace notifications bring it at once: the group
    must exist within a tenth of that, and the metric must name the path that found it.
    (How fast, under a second, is measured by `make bench-discovery`: no absolute time is
    asserted in the suite.)"""
    h = crowded
    assert h.r.dbsize() >= 1_000_000
    h.stream("calls", key=None, keyPattern="conv:*")
    h.group("brain", stream="calls")
    h.start()
    h.wait_ready("ConsumerGroup", "brain", timeout=30)

    def group_appears(key: str, register: bool) -> None:
        h.r.xadd(key, {"turn": 0})
        if register:  # what the SDK's publish does on a publisher's first write to a key
            h.r.xadd(REGISTRY_KEY, {REGISTRY_FIELD: key})
        wait_until(
            lambda: "brain" in h.groups_in_redis(key),
            20,  # a tenth of the ~200 s a SCAN of this keyspace takes at the default poll
            interval=0.005,
            message=lambda: h.logs()[-3000:],
        )

    h.wait_status("RedisStream", "calls", lambda s: "no notifications" in s.get("discovery", ""))
    group_appears("conv:registered", register=True)
    assert h.metric("streamherd_discovered_streams_total", path="registry") >= 1
    # Notifications on (the operator reads notify-keyspace-events when it starts, and
    # within a minute of a change): a publisher that does not use the SDK is found as fast.
    assert h.operator is not None
    h.operator.stop()
    h.r.config_set("notify-keyspace-events", "Kn")
    h.start()
    wait_until(
        lambda: (
            "notifications (keyspace" in (h.status("RedisStream", "calls").get("discovery") or "")
        ),
        30,
        interval=0.1,
    )
    group_appears("conv:notified", register=False)
    assert h.metric("streamherd_discovered_streams_total", path="notification") >= 1
