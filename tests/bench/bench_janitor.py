"""janitor: 100,000 stale pending entries left by 20 dead consumers on one stream.

(a) janitor: ``run_pass`` as the operator runs it (strategy Requeue, batchSize 500, the
    default 2 s time budget; passes back to back until the PEL is empty): the consumers are
    named after pods that are gone, so each one's entries are re-queued (copied to the tail
    with their delivery history, originals acked) and the consumers removed;
(b) per_entry: what many cron scripts do: XPENDING a page of 100, then XCLAIM each entry
    to a fixed consumer, one round trip per entry;
(c) autoclaim: the seeds' cron: XAUTOCLAIM COUNT 100 to a fixed consumer until the cursor
    wraps. It only claims: a consumer reading ">" never sees those entries.
Every round starts from the same freshly built PEL; rounds interleave (a, c, b, a, c, b...)
so machine noise hits all alike; medians are reported. ``lost`` counts messages the janitor
left neither re-queued nor pending (must be 0); the stream is checked entry by entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer
from redis.utils import HIREDIS_AVAILABLE

from streamherd.api.consumergroup import Recovery
from streamherd.controller.janitor_pass import Progress, run_pass
from streamherd.decisions.recovery import Pods
from streamherd.gateway import Endpoint, RedisGateway

ENTRIES, CONSUMERS, KEY, GROUP = 100_000, 20, "orders", "fulfilment"
DEPLOYMENT = "workers"
DEAD = [f"{DEPLOYMENT}-5d8f7c6b9a-{i:05d}" for i in range(CONSUMERS)]
MIN_IDLE_MS = 50


async def populate(client: aredis.Redis) -> None:
    """ENTRIES entries, all delivered to CONSUMERS consumers (interleaved reads of 100, as
    busy consumers read), none acknowledged."""
    await client.flushall()
    for start in range(0, ENTRIES, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, start + 5000):
            pipe.xadd(KEY, {"msg": str(i), "order": f"order-{i}", "amount": "42.50"})
        await pipe.execute()
    await client.xgroup_create(KEY, GROUP, "0")
    for turn in range(ENTRIES // 100):
        await client.xreadgroup(GROUP, DEAD[turn % CONSUMERS], {KEY: ">"}, count=100)
    assert (await client.xpending(KEY, GROUP))["pending"] == ENTRIES
    await asyncio.sleep(MIN_IDLE_MS / 1000 * 2)  # every entry is stale


async def janitor(gateway: RedisGateway) -> None:
    spec = Recovery(batch_size=500)
    pods = Pods(DEPLOYMENT, frozenset(), frozenset(), gone=frozenset(DEAD))  # all pods gone

    async def read_pods() -> Pods:
        return pods

    progress = Progress()
    while True:
        outcome = await run_pass(gateway, [KEY], GROUP, spec, pods=read_pods, progress=progress)
        if outcome.complete:
            return


async def per_entry(client: aredis.Redis) -> None:
    start = "-"
    while True:
        page = await client.xpending_range(KEY, GROUP, start, "+", 100)
        for row in page:
            await client.xclaim(KEY, GROUP, "cron", MIN_IDLE_MS, [row["message_id"]])
        if len(page) < 100:
            return
        start = "(" + page[-1]["message_id"]


async def autoclaim(client: aredis.Redis) -> None:
    cursor = "0-0"
    while True:
        cursor, _claimed, _deleted = await client.xautoclaim(
            KEY, GROUP, "cron", MIN_IDLE_MS, cursor, count=100
        )
        if cursor == "0-0":
            return


async def lost_after_janitor(client: aredis.Redis) -> int:
    """Messages neither re-queued (a copy after the original entries) nor still pending."""
    copies: set[str] = set()
    made = 0
    after = "-"
    while True:
        chunk = await client.xrange(KEY, min=after, count=10_000)
        if not chunk:
            break
        found = [f["msg"] for _, f in chunk if "streamherd-origin-id" in f]
        made += len(found)
        copies.update(found)
        after = "(" + chunk[-1][0]
    assert made == len(copies), f"{made - len(copies)} messages re-queued twice"
    pending = (await client.xpending(KEY, GROUP))["pending"]
    consumers = len(await client.xinfo_consumers(KEY, GROUP))
    assert consumers == 0, f"{consumers} dead consumers left"
    return ENTRIES - len(copies) - pending


async def main(version: str, rounds: int) -> dict[str, object]:
    server = RedisServer(version=version).start()
    try:
        client = aredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
        gateway = RedisGateway(Endpoint(url=server.url), command_timeout=60)
        await gateway.connect()
        times: dict[str, list[float]] = {"janitor": [], "autoclaim": [], "per_entry": []}
        lost = 0
        for _ in range(rounds):
            for name in ("janitor", "autoclaim", "per_entry"):
                await populate(client)
                started = time.perf_counter()
                if name == "janitor":
                    await janitor(gateway)
                elif name == "autoclaim":
                    await autoclaim(client)
                else:
                    await per_entry(client)
                times[name].append(time.perf_counter() - started)
                if name == "janitor":
                    lost = max(lost, await lost_after_janitor(client))
                else:
                    claimed = await client.xpending_range(KEY, GROUP, "-", "+", 1, "cron")
                    assert claimed, f"{name} claimed nothing"
        await gateway.close()
        await client.aclose()
    finally:
        server.cleanup()
    janitor_s = statistics.median(times["janitor"])
    per_entry_s = statistics.median(times["per_entry"])
    autoclaim_s = statistics.median(times["autoclaim"])
    return {
        "entries": ENTRIES,
        "janitor_s": round(janitor_s, 3),
        "per_entry_s": round(per_entry_s, 3),
        "autoclaim_s": round(autoclaim_s, 3),
        "ratio": round(per_entry_s / janitor_s, 1),
        "lost": lost,
        "entries_per_s": round(ENTRIES / janitor_s),
        "janitor_vs_autoclaim": round(janitor_s / autoclaim_s, 2),
        "redis": version,
        "hiredis": HIREDIS_AVAILABLE,
        "rounds": rounds,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="7.0", choices=["7.0", "8.2"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.redis, args.rounds))))
