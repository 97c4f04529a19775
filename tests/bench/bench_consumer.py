"""consumer: one pattern consumer over 5,000 call streams, on one local redis-server and on a
3-primary Redis Cluster.

(a) old: the loop e2e/consumer.py had before the SDK: a keyspace SCAN (and XINFO GROUPS per
    stream) every second, every stream in every XREADGROUP with COUNT max(1, batch // streams);
(b) sdk: ``streamherd.consumer.Consumer``: one SCAN at start, then the registry of new streams;
    reads of at most ``batch`` entries; active streams read each round, dormant ones swept;
    its own history probed every second.

Each drains 5,000 streams x 3 entries (batch 10, a no-op handler), then sits idle for a few
seconds with every stream quiet; then new calls start one by one (published through the
SDK, the group created right after as the operator would) and the time to the first event
handled is taken. Then quiet calls speak again (one event each: the time to its
handling), and new calls talk (one event every 250 ms, as in
manifests/examples/conversations.yaml: the time from each event to its handling). Both run
against the same server, one after the other, with the same redis.asyncio client settings.

(c) sdk_cluster / (d) sdk_cluster_notified: the SDK on a 3-primary Redis Cluster (the old loop
    cannot run there: its reads span slots), without and with keyspace notifications
    (``notify-keyspace-events Kt``): reads per hash slot pipelined per node; waits on the
    registry's own blocking read and, without notifications, re-reads of the active streams
    after a doubling pause (``consumer/waking.py``). Redis figures are summed over the nodes;
    ``connections`` is the consumer's (named) connections over all nodes.

Reported: drain time, the largest read, Redis commands and Redis CPU per idle second, this
process's CPU per idle second, new-call, resumed-call and talking-call latency (median).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis.asyncio as aredis
from e2e.cluster.redis import RedisCluster as RedisClusterProcesses
from e2e.cluster.redis import RedisServer
from redis.asyncio.cluster import RedisCluster

from streamherd.consumer import Consumer, Entry, StreamClient

STREAMS, EVENTS, BATCH = 5000, 3, 10
IDLE_S = 5.0
NEW_CALLS = 10
TALKING_CALLS, TALK_EVERY_S, TALK_EVENTS = 10, 0.25, 8
RESUMED_CALLS = 5


AnyRedis = aredis.Redis | RedisCluster


async def populate(r: AnyRedis, prefix: str) -> int:
    publisher = StreamClient(r)
    for turn in range(EVENTS):
        for part in range(0, STREAMS, 50):
            keys = [f"{prefix}:{i}" for i in range(part, min(part + 50, STREAMS))]
            await asyncio.gather(*(publisher.publish(k, {"turn": str(turn)}) for k in keys))
    pipe = r.pipeline(transaction=False)
    for i in range(STREAMS):
        pipe.xgroup_create(f"{prefix}:{i}", "g", id="0")
    await pipe.execute()
    return STREAMS * EVENTS


class Tally:
    def __init__(self) -> None:
        self.handled, self.largest, self.reads = 0, 0, 0
        self.handled_keys: set[str] = set()
        self.handled_at: dict[tuple[str, str], float] = {}
        """(stream, id) -> when it was handled."""
        self.changed = asyncio.Event()

    def count(self, keys: list[str], ids: Sequence[tuple[str, str]] = ()) -> None:
        self.reads += 1
        self.largest = max(self.largest, len(keys))
        self.handled += len(keys)
        self.handled_keys.update(keys)
        now = time.monotonic()
        self.handled_at.update(dict.fromkeys(ids, now))
        self.changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.changed.clear()
            await self.changed.wait()

    async def batch(self, entries: list[Entry]) -> None:
        self.count([e.stream for e in entries], [(e.stream, e.id) for e in entries])


async def old_loop(r: aredis.Redis, pattern: str, tally: Tally, stop: asyncio.Event) -> None:
    """e2e/consumer.py before the SDK (its Streams class and read loop), asyncio."""
    keys: list[str] = []
    refreshed = 0.0
    while not stop.is_set():
        if time.monotonic() - refreshed > 1.0:
            found = sorted(
                [k async for k in r.scan_iter(match=pattern, count=1000, _type="stream")]
            )
            pipe = r.pipeline(transaction=False)
            for k in found:
                pipe.xinfo_groups(k)
            infos = await pipe.execute(raise_on_error=False)
            keys = [
                k
                for k, g in zip(found, infos, strict=True)
                if isinstance(g, list) and any(x["name"] == "g" for x in g)
            ]
            refreshed = time.monotonic()
        if not keys:
            await asyncio.sleep(0.2)
            continue
        reply = await r.xreadgroup(
            "g", "old", dict.fromkeys(keys, ">"), count=max(1, BATCH // len(keys)), block=200
        )
        entries = [(k, i) for k, items in reply or [] for i, _ in items]
        if entries:
            tally.count([k for k, _ in entries])
            pipe = r.pipeline(transaction=False)
            for k, i in entries:
                pipe.xack(k, "g", i)
            await pipe.execute()


async def measure(
    r: AnyRedis,
    prefix: str,
    run: Callable[[Tally, asyncio.Event], Awaitable[None]],
    name: str | None = None,
) -> dict[str, Any]:
    total = await populate(r, prefix)
    tally, stop = Tally(), asyncio.Event()
    began = time.monotonic()
    task = asyncio.create_task(run(tally, stop))
    await tally.until(lambda: tally.handled >= total)
    drain = time.monotonic() - began
    await asyncio.sleep(3.0)  # every stream goes quiet (the SDK's active window: 2 s here)
    calls0, cpu0, server0 = await commands(r), time.process_time(), await server_cpu(r)
    await asyncio.sleep(IDLE_S)
    calls1, cpu1, server1 = await commands(r), time.process_time(), await server_cpu(r)
    publisher = StreamClient(r)
    latencies = []
    for n in range(NEW_CALLS):
        key = f"{prefix}:new{n}"
        start = time.monotonic()
        await publisher.publish(key, {"turn": "0"})
        await r.xgroup_create(key, "g", id="0")  # the operator, reacting at once
        await tally.until(lambda key=key: key in tally.handled_keys)  # type: ignore[misc]
        latencies.append(time.monotonic() - start)
    resumed = await resume(publisher, prefix, tally) if name else []
    talking = await talk(r, publisher, prefix, tally) if name else []
    connections = await named(r, name) if name else None
    stop.set()
    await asyncio.wait_for(task, 30)
    # less the INFO commandstats and INFO cpu of the measurement, on each node
    idle_calls = calls1 - calls0 - 2 * len(nodes(r))
    extra = {}
    if talking:
        extra["talking_event_ms_p50"] = round(statistics.median(talking) * 1000)
        extra["talking_event_ms_max"] = round(max(talking) * 1000)
        extra["resumed_call_ms_p50"] = round(statistics.median(resumed) * 1000)
    if connections is not None:
        extra["connections"] = connections
    return {
        **extra,
        "drain_s": round(drain, 2),
        "largest_read": tally.largest,
        "reads": tally.reads,
        "idle_redis_commands_per_s": round(idle_calls / IDLE_S),
        "idle_redis_cpu_ms_per_s": round((server1 - server0) * 1000 / IDLE_S, 1),
        "idle_client_cpu_ms_per_s": round((cpu1 - cpu0) * 1000 / IDLE_S, 1),
        "new_call_ms_p50": round(statistics.median(latencies) * 1000),
    }


async def talk(r: AnyRedis, publisher: StreamClient, prefix: str, tally: Tally) -> list[float]:
    """New calls that talk: TALKING_CALLS calls start (first event published through the SDK,
    the group created right after, as the operator would), then each gets an event every
    TALK_EVERY_S; the time from each of those events to its handling."""
    keys = [f"{prefix}:talk{i}" for i in range(TALKING_CALLS)]
    first = []
    for key in keys:
        first.append((key, await publisher.publish(key, {"turn": "hello"})))
        await r.xgroup_create(key, "g", id="0")
    await tally.until(lambda: all(i in tally.handled_at for i in first))
    sent: dict[tuple[str, str], float] = {}
    for turn in range(TALK_EVENTS):
        await asyncio.sleep(TALK_EVERY_S)
        for key in keys:
            sent[(key, await publisher.publish(key, {"turn": f"talk{turn}"}))] = time.monotonic()
    await tally.until(lambda: all(i in tally.handled_at for i in sent))
    return [tally.handled_at[i] - at for i, at in sent.items()]


async def resume(publisher: StreamClient, prefix: str, tally: Tally) -> list[float]:
    """Calls quiet for longer than the active window speak again: one event each, in turn;
    the time to its handling (a dormant stream is swept every sweep_interval, 5 s, unless a
    notification rings)."""
    latencies = []
    for i in range(100, 100 + RESUMED_CALLS):
        start = time.monotonic()
        added = (f"{prefix}:{i}", await publisher.publish(f"{prefix}:{i}", {"turn": "again"}))
        await tally.until(lambda added=added: added in tally.handled_at)  # type: ignore[misc]
        latencies.append(time.monotonic() - start)
    return latencies


def nodes(r: AnyRedis) -> list[Any]:
    return r.get_primaries() if isinstance(r, RedisCluster) else [None]


async def info(r: AnyRedis, section: str) -> list[dict[str, Any]]:
    if isinstance(r, RedisCluster):
        return [await r.info(section, target_nodes=n) for n in r.get_primaries()]
    return [await r.info(section)]


async def commands(r: AnyRedis) -> int:
    return sum(int(v["calls"]) for stats in await info(r, "commandstats") for v in stats.values())


async def server_cpu(r: AnyRedis) -> float:
    return sum(
        float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]) for cpu in await info(r, "cpu")
    )


async def named(r: AnyRedis, name: str) -> int:
    """Connections named ``name`` (the SDK names them after the consumer), over all nodes."""
    if isinstance(r, RedisCluster):
        lists = [await r.client_list(target_nodes=n) for n in r.get_primaries()]
    else:
        lists = [await r.client_list()]
    return sum(c["name"] == name for clients in lists for c in clients)


def sdk_run(url: str, prefix: str, **options: Any) -> Callable[[Tally, asyncio.Event], Any]:
    async def run(tally: Tally, stop: asyncio.Event) -> None:
        client = StreamClient.from_url(url, group="g", consumer=prefix, **options)
        consumer = Consumer(
            client, pattern=f"{prefix}:*", batch_handler=tally.batch, batch=BATCH, active_window=2.0
        )
        task = asyncio.create_task(consumer.run())
        await stop.wait()
        consumer.stop()
        await task
        await client.close()

    return run


async def main() -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    server = RedisServer("7.0").start()
    try:
        r = aredis.Redis.from_url(server.url, decode_responses=True)

        async def old(tally: Tally, stop: asyncio.Event) -> None:
            await old_loop(r, "old:*", tally, stop)

        results["old"] = await measure(r, "old", old)
        await r.flushall()
        results["sdk"] = await measure(r, "sdk", sdk_run(server.url, "sdk"), "sdk")
        await r.aclose()
    finally:
        server.cleanup()
    cluster = RedisClusterProcesses("7.0").start()
    try:
        rc = RedisCluster.from_url(cluster.url, decode_responses=True)
        await rc.initialize()
        run = sdk_run(cluster.url, "cl", mode="Cluster")
        results["sdk_cluster"] = await measure(rc, "cl", run, "cl")
        await rc.flushall(target_nodes=RedisCluster.PRIMARIES)
        await rc.config_set("notify-keyspace-events", "Kt", target_nodes=RedisCluster.PRIMARIES)
        run = sdk_run(cluster.url, "cn", mode="Cluster")
        results["sdk_cluster_notified"] = await measure(rc, "cn", run, "cn")
        await rc.aclose()
    finally:
        cluster.cleanup()
    o, s = results["old"], results["sdk"]
    return {
        "streams": STREAMS,
        "entries": STREAMS * EVENTS,
        "batch": BATCH,
        **{f"{run}_{k}": v for run in ("sdk", "old") for k, v in results[run].items()},
        **{
            f"{run}_{k}": v
            for run in ("sdk_cluster", "sdk_cluster_notified")
            for k, v in results[run].items()
        },
        "idle_redis_cpu_ratio": round(
            s["idle_redis_cpu_ms_per_s"] / max(o["idle_redis_cpu_ms_per_s"], 0.1), 3
        ),
        "cluster_idle_redis_cpu_ratio": round(
            results["sdk_cluster"]["idle_redis_cpu_ms_per_s"]
            / max(s["idle_redis_cpu_ms_per_s"], 0.1),
            3,
        ),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
