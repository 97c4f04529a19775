"""first-unread: what the observe script's first-unread hints save on sleeping groups.

One local redis-server (7.0) holds 5,000 call streams under a pattern and 1,000 single
streams, each with one group behind its stream's tail (at zero replicas: its position does
not move) while a producer keeps adding entries. A Poller polls them all, as the operator
does: (a) with the hints (the first entry found after a group's last-delivered-id, sent back
so the script need not look it up again while the group stays there); (b) without (every
lagging group's first unread entry looked up at every poll). Rounds alternate (a, b, a, ...)
so machine noise hits both alike; medians per poll of the operator's CPU, Redis's CPU
(INFO cpu) and the XRANGE calls the script made (INFO commandstats).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer
from tests.gateway.helpers import command_calls

from streamherd.controller.polling import Poller, Source
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.metrics import Metrics
from streamherd.observations import Observation


class WithoutHints(RedisGateway):
    """The gateway as it was before the hints: every lookup made afresh."""

    async def observe(self, keys: Any, **options: Any) -> Observation:
        options.pop("first_unread_hints", None)
        return await super().observe(keys, **options)


async def redis_cpu_ms(r: aredis.Redis) -> float:
    cpu = await r.info("cpu")
    return (float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])) * 1000


async def measure(
    r: aredis.Redis, url: str, keys: list[str], hints: bool, polls: int
) -> dict[str, float]:
    gateway = (RedisGateway if hints else WithoutHints)(Endpoint(url=url))
    poller = Poller(gateway, Metrics())
    poller.subscribe("pattern", Source(pattern="call:*"), 2.0)
    singles = [k for k in keys if not k.startswith("call:")]
    for key in singles:
        poller.subscribe(key, Source(key=key), 2.0)
    try:
        for _ in range(6):  # every key through its first poll and an age turn
            await poller.poll_once()
        client = redis_ms = 0.0
        xranges = 0
        for n in range(polls):
            produce = r.pipeline(transaction=False)
            for key in keys[n % 20 :: 20]:
                produce.xadd(key, {"n": n})
            await produce.execute()
            cpu, ms, calls = (
                time.process_time(),
                await redis_cpu_ms(r),
                await command_calls(r, "xrange"),
            )
            await poller.poll_once()
            client += time.process_time() - cpu
            redis_ms += await redis_cpu_ms(r) - ms
            xranges += await command_calls(r, "xrange") - calls
        return {
            "client_ms": client * 1000 / polls,
            "redis_ms": redis_ms / polls,
            "xranges": xranges / polls,
        }
    finally:
        await poller.stop()
        await gateway.close()


async def run(pattern_streams: int, singles: int, rounds: int, polls: int) -> dict[str, Any]:
    server = RedisServer(version="7.0").start()
    try:
        r = aredis.Redis.from_url(server.url, decode_responses=True)
        keys = [f"call:{i:05d}" for i in range(pattern_streams)]
        keys += [f"stream:{i:04d}" for i in range(singles)]
        setup = r.pipeline(transaction=False)
        for key in keys:
            setup.xadd(key, {"n": "read"})
            setup.xgroup_create(key, "g", "$", entries_read=1)
            setup.xadd(key, {"n": "unread"})
        await setup.execute()
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for _ in range(rounds):
            for hints in (True, False):
                runs[hints].append(await measure(r, server.url, keys, hints, polls))
        await r.aclose()
    finally:
        server.cleanup()

    def median(hints: bool, field: str) -> float:
        return round(statistics.median(m[field] for m in runs[hints]), 2)

    result: dict[str, Any] = {"keys": len(keys), "rounds": rounds, "polls_per_round": polls}
    for field in ("client_ms", "redis_ms", "xranges"):
        result[f"hints_{field}"] = median(True, field)
        result[f"without_{field}"] = median(False, field)
    for field in ("client_ms", "redis_ms"):
        result[f"{field}_ratio"] = round(median(True, field) / median(False, field), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern-streams", type=int, default=5000)
    parser.add_argument("--singles", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(run(args.pattern_streams, args.singles, args.rounds, args.polls))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
