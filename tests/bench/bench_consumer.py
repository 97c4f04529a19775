"""consumer: one pattern consumer over 5,000 call streams on one local redis-server.

(a) old: the loop e2e/consumer.py had before the SDK: a keyspace SCAN (and XINFO GROUPS per
    stream) every second, every stream in every XREADGROUP with COUNT max(1, batch // streams);
(b) sdk: ``streamherd.consumer.Consumer``: one SCAN at start, then the registry of new streams;
    reads of at most ``batch`` entries; active streams read each round, dormant ones swept;
    its own history probed every second.

Each drains 5,000 streams x 3 entries (batch 10, a no-op handler), then sits idle for a few
seconds with every stream quiet; then new calls start one by one (published through the
SDK, the group created right after as the operator would) and the time to the first event
handled is taken. Both run against the same server, one after the other, with the same
redis.asyncio client settings. Reported: drain time, the largest read, Redis commands and
Redis CPU per idle second, this process's CPU per idle second, new-call latency (median).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer

from streamherd.consumer import Consumer, Entry, StreamClient

STREAMS, EVENTS, BATCH = 5000, 3, 10
IDLE_S = 5.0
NEW_CALLS = 10


async def populate(r: aredis.Redis, prefix: str) -> int:
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
        self.changed = asyncio.Event()

    def count(self, keys: list[str]) -> None:
        self.reads += 1
        self.largest = max(self.largest, len(keys))
        self.handled += len(keys)
        self.handled_keys.update(keys)
        self.changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.changed.clear()
            await self.changed.wait()

    async def batch(self, entries: list[Entry]) -> None:
        self.count([e.stream for e in entries])


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
    r: aredis.Redis,
    prefix: str,
    run: Callable[[Tally, asyncio.Event], Awaitable[None]],
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
    stop.set()
    await asyncio.wait_for(task, 30)
    idle_calls = calls1 - calls0 - 2  # less the two INFO commandstats of the measurement
    return {
        "drain_s": round(drain, 2),
        "largest_read": tally.largest,
        "reads": tally.reads,
        "idle_redis_commands_per_s": round(idle_calls / IDLE_S),
        "idle_redis_cpu_ms_per_s": round((server1 - server0) * 1000 / IDLE_S, 1),
        "idle_client_cpu_ms_per_s": round((cpu1 - cpu0) * 1000 / IDLE_S, 1),
        "new_call_ms_p50": round(statistics.median(latencies) * 1000),
    }


async def commands(r: aredis.Redis) -> int:
    stats = await r.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def server_cpu(r: aredis.Redis) -> float:
    cpu = await r.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def main() -> dict[str, Any]:
    server = RedisServer("7.0").start()
    try:
        r = aredis.Redis.from_url(server.url, decode_responses=True)

        async def old(tally: Tally, stop: asyncio.Event) -> None:
            await old_loop(r, "old:*", tally, stop)

        async def sdk(tally: Tally, stop: asyncio.Event) -> None:
            client = StreamClient.from_url(server.url, group="g", consumer="sdk")
            consumer = Consumer(
                client, pattern="sdk:*", batch_handler=tally.batch, batch=BATCH, active_window=2.0
            )
            task = asyncio.create_task(consumer.run())
            await stop.wait()
            consumer.stop()
            await task
            await client.close()

        results = {"old": await measure(r, "old", old)}
        await r.flushall()
        results["sdk"] = await measure(r, "sdk", sdk)
        await r.aclose()
    finally:
        server.cleanup()
    o, s = results["old"], results["sdk"]
    return {
        "streams": STREAMS,
        "entries": STREAMS * EVENTS,
        "batch": BATCH,
        **{f"sdk_{k}": v for k, v in s.items()},
        **{f"old_{k}": v for k, v in o.items()},
        "idle_redis_cpu_ratio": round(
            s["idle_redis_cpu_ms_per_s"] / max(o["idle_redis_cpu_ms_per_s"], 0.1), 3
        ),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
