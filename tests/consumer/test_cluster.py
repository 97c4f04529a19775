"""The SDK on a 3-primary Redis Cluster (7.0 and 8.2): what Redis Cluster allows a read over
several streams, a pattern consumer over 1,200 call streams on every node (each entry once,
bounded reads, new calls followed, bounded connections, no extra round trips), keyspace
notifications, publish's two commands, foreign copies, SIGTERM mid-batch, and the janitor's
Claim handing a killed consumer's work to a live one that reads its history."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from e2e.cluster.processes import REPO_ROOT, async_wait_until, wait_until
from e2e.cluster.redis import RedisCluster as RedisClusterProcesses
from redis import exceptions as redis_exceptions
from redis.asyncio.cluster import RedisCluster
from tests.consumer.conftest import running
from tests.janitor.helpers import recovery

from streamherd.consumer import Consumer, Entry, NoGroupError, StreamClient, waking
from streamherd.consumer.waking import ClusterWaker, Plan
from streamherd.controller.janitor_pass import Progress, run_pass
from streamherd.decisions.recovery import Pods
from streamherd.fields import DELIVERIES_FIELD, GROUP_FIELD, ORIGIN_ID_FIELD
from streamherd.gateway import RedisGateway
from streamherd.keys import REGISTRY_FIELD, REGISTRY_KEY, hash_slot
from streamherd.tasks import cancelled

CALLS = 1200
EVENTS = 2
BATCH = 50


def keys_on_one_node(cluster: RedisCluster, n: int) -> list[str]:
    """``n`` call-stream names in different slots, all held by one node."""
    by_node: dict[str, list[str]] = {}
    for i in range(1000):
        key = f"conv:{i}"
        by_node.setdefault(cluster.get_node_from_key(key).name, []).append(key)
        found = by_node[cluster.get_node_from_key(key).name]
        if len(found) == n:
            return found
    raise AssertionError("no node held enough keys")


async def seed_calls(
    cluster: RedisCluster, calls: range, events: int = EVENTS, group: str = "g"
) -> set[tuple[str, str]]:
    """Call streams with ``events`` entries each and the group at 0 (what the operator
    creates), written in one pipeline (redis-py sends it per node)."""
    pipe = cluster.pipeline()
    for c in calls:
        for turn in range(events):
            pipe.xadd(f"conv:{c}", {"msg": f"conv:{c}/{turn}"})
        pipe.xgroup_create(f"conv:{c}", group, id="0")
    replies = await pipe.execute()
    ids: set[tuple[str, str]] = set()
    at = 0
    for c in calls:
        ids.update((f"conv:{c}", str(replies[at + t])) for t in range(events))
        at += events + 1
    return ids


async def per_node(cluster: RedisCluster, section: str) -> dict[str, dict[str, Any]]:
    return {
        node.name: await cluster.info(section, target_nodes=node)
        for node in cluster.get_primaries()
    }


class Connections:
    """``INFO clients`` and ``INFO stats`` of every primary, sampled while a consumer runs
    (by a client of its own, connected before the start): the most connected clients seen per
    node beyond those at the start, and connections accepted since the start."""

    def __init__(self, cluster: RedisClusterProcesses, name: str = "c1") -> None:
        self.cluster = RedisCluster.from_url(cluster.url, decode_responses=True)
        self.name = name
        self.base_connected: dict[str, int] = {}
        self.base_received: dict[str, int] = {}
        self.most: Counter[str] = Counter()
        self.most_named: Counter[str] = Counter()
        """The most connections named after the consumer (``CLIENT LIST``), per node."""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Connections:
        await self.cluster.initialize()
        await per_node(self.cluster, "server")  # its own connections, before the baseline
        for name, info in (await per_node(self.cluster, "clients")).items():
            self.base_connected[name] = int(info["connected_clients"])
        for name, info in (await per_node(self.cluster, "stats")).items():
            self.base_received[name] = int(info["total_connections_received"])
        self._task = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            for name, info in (await per_node(self.cluster, "clients")).items():
                extra = int(info["connected_clients"]) - self.base_connected[name]
                self.most[name] = max(self.most[name], extra)
            for node in self.cluster.get_primaries():
                clients = await self.cluster.client_list(target_nodes=node)
                named = sum(c["name"] == self.name for c in clients)
                self.most_named[node.name] = max(self.most_named[node.name], named)
            await asyncio.sleep(0.05)

    async def received(self) -> dict[str, int]:
        return {
            name: int(info["total_connections_received"]) - self.base_received[name]
            for name, info in (await per_node(self.cluster, "stats")).items()
        }

    async def __aexit__(self, *_: object) -> None:
        # Re-cancelled until it stops: a loop of redis-py commands swallows a cancellation now
        # and then (one in twenty here) and would sample on for ever (tasks.cancelled).
        await cancelled(self._task)
        await self.cluster.aclose()


async def getkeys_calls(cluster: RedisCluster) -> int:
    stats = await per_node(cluster, "commandstats")
    return sum(int(s.get("cmdstat_command|getkeys", {}).get("calls", 0)) for s in stats.values())


def sdk(cluster: RedisClusterProcesses, name: str = "c1", **options: Any) -> StreamClient:
    return StreamClient.from_url(cluster.url, mode="Cluster", group="g", consumer=name, **options)


# ---------------------------------------------------------------------- what Redis allows


async def test_what_redis_cluster_allows_a_read_over_several_streams(
    cluster_client: RedisCluster,
) -> None:
    """The facts the SDK's cluster path stands on (``consumer/topology.py``): a command's
    keys must share a hash slot, even when one node holds both slots; a hash tag makes them
    share one; a blocking read, MULTI or a script cannot span slots either."""
    a, b = keys_on_one_node(cluster_client, 2)
    assert hash_slot(a) != hash_slot(b)
    tagged = ["conv:{tenant-7}:1", "conv:{tenant-7}:2"]
    for key in [a, b, *tagged]:
        await cluster_client.xadd(key, {"msg": key})
        await cluster_client.xgroup_create(key, "g", id="0")
    node = cluster_client.get_node_from_key(a)
    direct = redis.asyncio.Redis(host=node.host, port=node.port, decode_responses=True)
    try:
        for command in (
            ["XREADGROUP", "GROUP", "g", "c", "STREAMS", a, b, ">", ">"],
            ["XREAD", "BLOCK", "100", "STREAMS", a, b, "$", "$"],
            ["EVAL", "return redis.call('XLEN', KEYS[1]) + redis.call('XLEN', KEYS[2])", 2, a, b],
        ):
            with pytest.raises(redis.ResponseError, match="same slot"):
                await direct.execute_command(*command)
        pipe = direct.pipeline(transaction=True)
        pipe.xlen(a)
        pipe.xlen(b)
        with pytest.raises(redis.ResponseError, match="same slot"):
            await pipe.execute()
        tagged_node = cluster_client.get_node_from_key(tagged[0])
        same = redis.asyncio.Redis(host=tagged_node.host, port=tagged_node.port)
        reply = await same.execute_command(
            "XREADGROUP", "GROUP", "g", "c", "STREAMS", *tagged, ">", ">"
        )
        await same.aclose()
        assert len(reply) == 2, "one hash tag, one slot: one read"
    finally:
        await direct.aclose()


# ---------------------------------------------------------------------- a pattern consumer


async def test_a_pattern_consumer_over_1200_streams_on_every_node(
    redis_cluster: RedisClusterProcesses, cluster_client: RedisCluster
) -> None:
    expected = await seed_calls(cluster_client, range(CALLS))
    nodes = Counter(cluster_client.get_node_from_key(k).name for k, _ in expected)
    assert len(nodes) == 3 and min(nodes.values()) > CALLS * EVENTS // 5, f"spread: {nodes}"
    handled: list[tuple[str, str]] = []
    reads: list[int] = []

    async def handle_batch(entries: list[Entry]) -> None:
        reads.append(len(entries))
        handled.extend((e.stream, e.id) for e in entries)

    client = sdk(redis_cluster)
    c = Consumer(client, pattern="conv:*", batch_handler=handle_batch, batch=BATCH)
    getkeys_before = await getkeys_calls(cluster_client)
    async with Connections(redis_cluster) as connections, running(c) as task:
        await async_wait_until(
            lambda: len(handled) >= len(expected) or task.done(),
            60,
            message=lambda: f"{len(handled)} of {len(expected)} handled",
        )
        assert await getkeys_calls(cluster_client) == getkeys_before, (
            "reads name their node: no COMMAND GETKEYS round trip per read"
        )
        # New calls while it runs, published through the SDK (the registry tells it), each
        # talking again after its group exists.
        publisher = StreamClient(cluster_client)
        for call in range(CALLS, CALLS + 30):
            key = f"conv:{call}"
            expected.add((key, await publisher.publish(key, {"msg": f"{key}/0"})))
            await cluster_client.xgroup_create(key, "g", id="0")
            expected.add((key, await publisher.publish(key, {"msg": f"{key}/1"})))
        await async_wait_until(
            lambda: len(handled) >= len(expected) or task.done(),
            30,
            message=lambda: f"{len(handled)} of {len(expected)} handled",
        )
        # Two history reads and a sweep more, quiet: the waits are what runs now.
        await asyncio.sleep(2.5)  # showing that nothing more happens: no sleep-and-hope
        assert not task.done()
        received = await connections.received()
    assert set(handled) == expected and len(handled) == len(expected), "each entry once"
    assert max(reads) <= BATCH, f"a read over {CALLS} streams returned {max(reads)} entries"
    assert len(c.streams.followed) == CALLS + 30
    print(f"connections: most {connections.most}, named {connections.most_named}, new {received}")
    # However many slots its 1,230 streams are in: one connection per node for its commands
    # (sent one at a time), one to the registry's node for its blocking read, and the one
    # redis-py keeps to the node of the URL it started from. No reconnects.
    assert max(connections.most_named.values()) <= 3, connections.most_named
    assert sum(connections.most_named.values()) <= 3 + 2, connections.most_named
    assert max(connections.most.values()) <= 3, connections.most
    assert max(received.values()) <= 3, f"connections accepted per node: {received}"


@pytest.mark.parametrize(("flags", "how"), [("Kt", "pattern"), ("Et", "channels")])
async def test_keyspace_notifications_wake_it_and_find_streams_nobody_registered(
    redis_cluster: RedisClusterProcesses, cluster_client: RedisCluster, flags: str, how: str
) -> None:
    """With ``notify-keyspace-events`` on every primary, one subscription per primary rings
    the consumer's bell: an entry on a quiet stream, and a stream a plain ``XADD`` created
    after start-up (no registry entry), which only the start-up scan would have found.
    Keyspace events (K) are filtered by Redis, key events (E) by the consumer."""
    await cluster_client.config_set(
        "notify-keyspace-events", flags, target_nodes=RedisCluster.PRIMARIES
    )
    try:
        expected = await seed_calls(cluster_client, range(60), events=1)
        seen: list[tuple[str, str]] = []

        async def handle(entry: Entry) -> None:
            seen.append((entry.stream, entry.id))

        c = Consumer(sdk(redis_cluster), pattern="conv:*", handler=handle)
        async with Connections(redis_cluster) as connections, running(c) as task:
            await async_wait_until(
                lambda: (c.waker is not None and c.waker.notified) or task.done(), 20
            )
            await async_wait_until(lambda: set(seen) >= expected or task.done(), 30)
            for key in ("conv:unregistered-1", "conv:unregistered-2"):
                expected.add((key, await cluster_client.xadd(key, {"msg": key})))
                await cluster_client.xgroup_create(key, "g", id="0")
            expected.add(("conv:7", await cluster_client.xadd("conv:7", {"msg": "again"})))
            await async_wait_until(
                lambda: set(seen) >= expected or task.done(),
                30,
                message=lambda: f"missing {expected - set(seen)}",
            )
        assert sorted(seen) == sorted(expected), "each once"
        assert c.streams.is_followed("conv:unregistered-1")
        assert c.waker is not None and c.waker.notifications == how
        # Plus one pubsub connection per primary.
        assert max(connections.most.values()) <= 3, connections.most
    finally:
        await cluster_client.config_set(
            "notify-keyspace-events", "", target_nodes=RedisCluster.PRIMARIES
        )


class SwallowingWaker(ClusterWaker):
    """Each subscription carries on after its first cancellation, as one does when redis-py
    swallows it (``streamherd.tasks.cancelled``); the slot map read of the next round of
    subscriptions fails once when ``fail_next_round`` is set."""

    def __init__(self, redis: RedisCluster, *, pattern: str) -> None:
        super().__init__(redis, pattern=pattern)
        self.swallowed = 0
        self.fail_next_round = False
        initialize = redis.initialize

        async def initialize_unless_armed(**options: Any) -> RedisCluster:
            task = asyncio.current_task()
            if self.fail_next_round and task and task.get_name().endswith("notifications"):
                self.fail_next_round = False
                raise redis_exceptions.ConnectionError("injected: slot map unreadable")
            return await initialize(**options)

        redis.initialize = initialize_unless_armed  # type: ignore[method-assign]

    async def _listen(self, node: Any, plan: Plan) -> None:
        try:
            await super()._listen(node, plan)
        except asyncio.CancelledError:
            self.swallowed += 1
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await super()._listen(node, plan)


async def one_pubsub_connection_each(cluster: RedisCluster) -> bool:
    counts = [
        len(await cluster.client_list(_type="pubsub", target_nodes=node))
        for node in cluster.get_primaries()
    ]
    return counts == [1] * len(counts)


async def test_a_lost_subscription_is_restarted_though_the_others_swallow_their_cancel(
    redis_cluster: RedisClusterProcesses,
    cluster_client: RedisCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One primary stops answering (CLIENT PAUSE): its subscription's PING goes unanswered,
    so every subscription is restarted. The others swallow their cancellation (as redis-py
    can): they are cancelled again, not waited for after one cancellation for ever (what hung
    the keyspace test above: its own connection sampler lost about one cancel in twenty), and
    a slot map that cannot be read once does not end the notifications either. Afterwards:
    every primary subscribed again, one pubsub connection each, and an entry rings."""
    monkeypatch.setattr(waking, "HEALTH_CHECK", 0.5)
    await cluster_client.config_set(
        "notify-keyspace-events", "Kt", target_nodes=RedisCluster.PRIMARIES
    )
    try:
        expected = await seed_calls(cluster_client, range(3), events=1)
        seen: list[tuple[str, str]] = []

        async def handle(entry: Entry) -> None:
            seen.append((entry.stream, entry.id))

        c = Consumer(sdk(redis_cluster), pattern="conv:*", handler=handle)
        waker = c.waker = SwallowingWaker(c.client.redis, pattern="conv:*")
        async with running(c) as task:
            await async_wait_until(lambda: waker.notified or task.done(), 15)
            await async_wait_until(lambda: set(seen) >= expected or task.done(), 15)
            paused = cluster_client.get_node_from_key("conv:0")
            waker.fail_next_round = True
            await cluster_client.client_pause(3000, all=True, target_nodes=paused)
            await async_wait_until(lambda: not waker.notified, 10, message="never noticed")
            await async_wait_until(
                lambda: (waker.notified and not waker.fail_next_round) or task.done(),
                20,
                message=lambda: f"not subscribed again ({waker.swallowed} swallowed)",
            )
            assert waker.swallowed >= 1, "another subscription swallowed its cancellation"
            await async_wait_until(
                lambda: one_pubsub_connection_each(cluster_client),
                10,
                message="a subscription nobody reads was left behind",
            )
            for key in ("conv:0", "conv:1", "conv:2"):
                expected.add((key, await cluster_client.xadd(key, {"msg": "after"})))
            await async_wait_until(lambda: set(seen) >= expected or task.done(), 15)
        assert sorted(seen) == sorted(expected)
    finally:
        await cluster_client.config_set(
            "notify-keyspace-events", "", target_nodes=RedisCluster.PRIMARIES
        )


async def test_one_stream_on_a_cluster_blocks_on_its_slot(
    redis_cluster: RedisClusterProcesses, cluster_client: RedisCluster
) -> None:
    await cluster_client.xgroup_create("orders", "g", id="0", mkstream=True)
    seen: list[str] = []

    async def handle(entry: Entry) -> None:
        seen.append(entry.fields["msg"])

    c = Consumer(sdk(redis_cluster), stream="orders", handler=handle)
    async with running(c) as task:
        for i in range(20):
            await cluster_client.xadd("orders", {"msg": str(i)})
        await async_wait_until(lambda: len(seen) == 20 or task.done(), 20)
    assert seen == [str(i) for i in range(20)]
    assert c.waker is None, "one key: XREADGROUP BLOCK on its slot, as on one server"


# ---------------------------------------------------------------------- the client


async def test_publish_on_a_cluster_registers_in_a_second_command_after_the_write(
    redis_cluster: RedisClusterProcesses, cluster_client: RedisCluster
) -> None:
    """The registry is in another slot than the streams: the stream's XADD (with its group
    check) goes first, the registry's XADD after it, so a reader never learns a key before
    the stream exists. Later publishes are one command; the cap applies once a group is seen."""
    keys = keys_on_one_node(cluster_client, 3)
    assert all(hash_slot(k) != hash_slot(REGISTRY_KEY) for k in keys)
    async with sdk(redis_cluster, maxlen=5, approximate=False) as client:
        for _ in range(8):
            for key in keys:
                await client.publish(key, {"msg": "x"})
        registered = [f[REGISTRY_FIELD] for _, f in await cluster_client.xrange(REGISTRY_KEY)]
        assert registered == keys, "each key announced once"
        assert [await cluster_client.xlen(k) for k in keys] == [8, 8, 8], "no group: untrimmed"
        await cluster_client.xgroup_create(keys[0], "g", id="0")
        for _ in range(3):
            await client.publish(keys[0], {"msg": "y"})
        assert await cluster_client.xlen(keys[0]) <= 8
        await client.publish(keys[0], {"msg": "z"})
        await client.publish(keys[0], {"msg": "z"})
        assert await cluster_client.xlen(keys[0]) == 5, "capped once it has a group"


async def test_reads_over_several_slots_and_a_stream_without_the_group(
    redis_cluster: RedisClusterProcesses, cluster_client: RedisCluster
) -> None:
    """One command per slot: a stream lacking the group refuses its own command only; the
    others' entries are delivered (``NoGroupError.entries``), nothing is left unread."""
    ready = keys_on_one_node(cluster_client, 3)
    for key in ready:
        await cluster_client.xadd(key, {"msg": key})
        await cluster_client.xgroup_create(key, "g", id="0")
    await cluster_client.xadd("conv:no-group", {"msg": "x"})
    async with sdk(redis_cluster) as client:
        with pytest.raises(NoGroupError) as caught:
            await client.read_group([*ready, "conv:no-group"], count=5)
        assert caught.value.key == "conv:no-group"
        assert sorted(e.stream for e in caught.value.entries) == sorted(ready)
        for key in ready:
            assert (await client.pending_summary(key)).count == 1
        history = await client.read_group(dict.fromkeys(ready, "0"), count=5)
        assert sorted(e.stream for e in history) == sorted(ready)
        assert all(e.deliveries == 2 for e in history), "Redis's own counters, per stream"


async def test_copies_for_another_group_are_acknowledged_on_a_cluster(
    redis_cluster: RedisClusterProcesses, cluster_client: RedisCluster
) -> None:
    keys = keys_on_one_node(cluster_client, 2)
    mine: list[str] = []
    for key in keys:
        await cluster_client.xgroup_create(key, "g", id="0", mkstream=True)
        await cluster_client.xadd(
            key, {ORIGIN_ID_FIELD: "1-0", DELIVERIES_FIELD: "2", GROUP_FIELD: "other", "m": "x"}
        )
        mine.append(await cluster_client.xadd(key, {"m": "mine"}))
    async with sdk(redis_cluster) as client:
        read = await client.read(dict.fromkeys(keys, ">"), count=5)
        assert sorted(e.id for e in read.entries) == sorted(mine)
        assert read.foreign_acked == 2
        for key in keys:
            assert (await client.pending_summary(key)).count == 1, "the copy was acknowledged"


# ---------------------------------------------------------------------- processes


class Processes:
    """e2e/consumer.py processes on the cluster, pattern conv:*, group "g"."""

    def __init__(self, cluster: RedisClusterProcesses) -> None:
        self.cluster = cluster
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, name: str, **env: str) -> subprocess.Popen[str]:
        environment = {
            **os.environ,
            "STREAMHERD_REDIS_URL": self.cluster.url,
            "STREAMHERD_REDIS_MODE": "Cluster",
            "STREAMHERD_STREAM_PATTERN": "conv:*",
            "STREAMHERD_GROUP": "g",
            "STREAMHERD_CONSUMER": name,
            **env,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "e2e.consumer"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def processes(redis_cluster: RedisClusterProcesses) -> Iterator[Processes]:
    started = Processes(redis_cluster)
    yield started
    started.stop()


@pytest.fixture
def cluster_sync(redis_cluster: RedisClusterProcesses) -> Iterator[redis.RedisCluster]:
    """A blocking cluster client, on an emptied cluster."""
    client = redis.RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    yield client
    client.close()


def pending(cluster: redis.RedisCluster, keys: list[str]) -> int:
    return sum(int(cluster.xpending(k, "g")["pending"]) for k in keys)


def test_sigterm_mid_batch_on_a_cluster_finishes_acks_and_exits_0(
    processes: Processes, cluster_sync: redis.RedisCluster
) -> None:
    """A batch over streams on every node, handled slowly; SIGTERM in the middle: the batch
    is finished and acknowledged, nothing more is read, exit 0."""
    keys = [f"conv:{i}" for i in range(10)]
    assert len({cluster_sync.get_node_from_key(k).name for k in keys}) == 3
    for key in keys:
        cluster_sync.xadd(key, {"msg": f"{key}/b"})
        cluster_sync.xgroup_create(key, "g", id="0")
    proc = processes.start("pod-1", WORK_MS="150", BATCH="10", MODE="history")
    wait_until(lambda: cluster_sync.scard("processed:g") >= 2, 30, message="never started")
    assert pending(cluster_sync, keys) >= 5, "the batch is read, half done"
    proc.send_signal(signal.SIGTERM)
    later = {key: cluster_sync.xadd(key, {"msg": f"{key}/late"}) for key in keys}
    assert proc.wait(20) == 0
    output = proc.stdout.read() if proc.stdout else ""
    assert cluster_sync.smembers("processed:g") == {f"{k}/b" for k in keys}, output
    assert pending(cluster_sync, keys) == 0, "the batch in flight was acknowledged"
    for key in keys:
        (group,) = cluster_sync.xinfo_groups(key)
        assert group["last-delivered-id"] != later[key], f"it read {key} after SIGTERM"
    assert "stopping" in output


async def test_the_janitor_claims_a_killed_consumers_work_to_a_live_one_on_a_cluster(
    cluster_gateway: RedisGateway, cluster_client: RedisCluster, processes: Processes
) -> None:
    """A consumer process dies mid-batch holding entries on streams of every node; the
    janitor's Claim pass (on the cluster gateway) hands them, by id, to a live SDK consumer,
    whose history read processes them: every entry processed, ids kept, nothing pending."""
    calls = range(40)
    expected = await seed_calls(cluster_client, calls, events=3)
    keys = [f"conv:{c}" for c in calls]
    dead, live = "web-5d8f7c6b9a-x2x4z", "web-5d8f7c6b9a-bbbbb"
    crasher = processes.start(dead, MODE="history", BATCH="20", WORK_MS="2", CRASH_AFTER="10")
    assert await asyncio.to_thread(crasher.wait, 30) == 1
    held = {
        k: int(p["pending"])
        for k in keys
        if (p := await cluster_client.xpending(k, "g"))["pending"]
    }
    assert sum(held.values()) >= 5, "it died holding entries"
    assert len({cluster_client.get_node_from_key(k).name for k in held}) >= 2
    processes.start(live, MODE="history", HISTORY_EVERY_S="0.2", WORK_MS="1")
    pods = Pods("web", frozenset({live}), frozenset({live}), gone=frozenset({dead}))

    async def read_pods() -> Pods:
        return pods

    spec = recovery(strategy="Claim", min_idle="500ms", max_deliveries=5, batch_size=50)
    claimed = 0
    deadline = time.monotonic() + 40
    while True:
        outcome = await run_pass(
            cluster_gateway, keys, "g", spec, pods=read_pods, progress=Progress()
        )
        claimed += outcome.claimed
        done = await cluster_client.smembers("processed:g")
        idle = [not (await cluster_client.xpending(k, "g"))["pending"] for k in held]
        if len(done) == len(expected) and all(idle):
            break
        assert time.monotonic() < deadline, f"{len(done)}/{len(expected)} processed"
        await asyncio.sleep(0.2)
    assert await cluster_client.smembers("processed:g") == {
        f"{k}/{t}" for k in keys for t in range(3)
    }, "nothing lost"
    assert claimed >= sum(held.values()) - 1, "the dead consumer's entries were claimed"
    assert sum([await cluster_client.xlen(k) for k in keys]) == len(expected), "ids kept"
