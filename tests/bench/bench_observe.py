"""observe: one full poll of 1,000 streams x 10 groups on one local redis-server.

(a) naive: one round trip per group (XINFO GROUPS), like one KEDA trigger per group;
(b) gateway: RedisGateway.observe over every stream, as the operator polls: every group's
    pending, lag (clamped / counted), consumers and entries-read, and the oldest pending age
    of a rotating fifth of the streams (``age_sample``: each stream's every 5th poll);
    ``gateway_all_ages_ms`` measures the ages of every stream in every poll, for comparison;
    ``gateway_lags_ms`` is a poll plus every group's lag decided (``decisions.lag``), as when
    every group on the endpoint has a ConsumerGroup;
    ``gateway_dead_letters_ms`` the poll that also reads the length of every stream's
    dead-letter stream (XLEN in the same pipeline, for the dead-letter metric; the operator
    does so in one poll of five).
Both use the same redis.asyncio client settings and the hiredis parser. Rounds alternate
(naive, gateway, naive, ...) so machine noise hits both alike; medians are reported.
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

from streamherd.decisions.lag import group_lag
from streamherd.decisions.sampling import age_sample
from streamherd.gateway import Endpoint, RedisGateway

STREAMS, GROUPS, ENTRIES = 1000, 10, 50
AGE_EVERY = 5


async def populate(client: aredis.Redis) -> list[str]:
    """Group g has read g*5 entries; odd groups still hold half of theirs pending: a mix of
    caught-up, lagging and busy groups."""
    keys = [f"conv:{i}" for i in range(STREAMS)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        for _ in range(ENTRIES):
            pipe.xadd(key, {"speaker": "caller", "text": "hello there"})
        for g in range(GROUPS):
            pipe.xgroup_create(key, f"g{g}", "0")
    await pipe.execute()
    for key in keys:
        pipe = client.pipeline(transaction=False)
        for g in range(1, GROUPS):
            pipe.xreadgroup(f"g{g}", "pod-1", {key: ">"}, count=g * 5)
        delivered = await pipe.execute()
        pipe = client.pipeline(transaction=False)
        for g, reply in zip(range(1, GROUPS), delivered, strict=True):
            ids = [entry_id for entry_id, _ in reply[0][1]]
            keep = len(ids) // 2 if g % 2 else 0
            if ids[keep:]:
                pipe.xack(key, f"g{g}", *ids[keep:])
        await pipe.execute()
    return keys


async def naive_poll(client: aredis.Redis, keys: list[str]) -> int:
    pending = 0
    for key in keys:
        for g in range(GROUPS):
            groups = await client.xinfo_groups(key)
            pending += next(x["pending"] for x in groups if x["name"] == f"g{g}")
    return pending


async def gateway_poll(
    gateway: RedisGateway,
    keys: list[str],
    ages: set[str] | None = None,
    lengths: frozenset[str] = frozenset(),
) -> int:
    observed = await gateway.observe(keys, ages_for=ages, lengths_for=lengths)
    assert observed.problem is None, observed.message
    return sum(
        group.pending for stream in observed.streams.values() for group in stream.groups.values()
    )


async def gateway_poll_lags(gateway: RedisGateway, keys: list[str], ages: set[str]) -> int:
    observed = await gateway.observe(keys, ages_for=ages)
    assert observed.problem is None, observed.message
    cap = observed.lag_count_cap
    return sum(
        group_lag(stream, group, cap).value or 0
        for stream in observed.streams.values()
        for group in stream.groups.values()
    )


async def main(version: str, rounds: int) -> dict[str, object]:
    server = RedisServer(version=version).start()
    try:
        options = {"decode_responses": True, "socket_timeout": 30}
        client = aredis.Redis.from_url(server.url, **options)
        keys = await populate(client)
        gateway = RedisGateway(Endpoint(url=server.url))
        await gateway.connect()
        expected = await naive_poll(client, keys)
        assert await gateway_poll(gateway, keys) == expected, "both pollers must see the same"
        naive, fast, all_ages, lags, with_dlq = [], [], [], [], []
        dead_letters = frozenset(f"{key}:dlq" for key in keys)
        poll = 0
        for _ in range(rounds):
            started = time.perf_counter()
            await naive_poll(client, keys)
            naive.append(time.perf_counter() - started)
            for _ in range(AGE_EVERY):  # the fast pollers are cheap: more samples
                poll += 1
                started = time.perf_counter()
                await gateway_poll(gateway, keys, age_sample(keys, poll, AGE_EVERY))
                fast.append(time.perf_counter() - started)
                started = time.perf_counter()
                await gateway_poll(gateway, keys, None)
                all_ages.append(time.perf_counter() - started)
                started = time.perf_counter()
                await gateway_poll_lags(gateway, keys, age_sample(keys, poll, AGE_EVERY))
                lags.append(time.perf_counter() - started)
                started = time.perf_counter()
                await gateway_poll(gateway, keys, age_sample(keys, poll, AGE_EVERY), dead_letters)
                with_dlq.append(time.perf_counter() - started)
        await client.config_resetstat()
        for poll in range(AGE_EVERY):
            await gateway_poll(gateway, keys, age_sample(keys, poll, AGE_EVERY))
        stats = await client.info("commandstats")
        script = stats.get("cmdstat_evalsha", {})
        await gateway.close()
        await client.aclose()
    finally:
        server.cleanup()
    naive_ms = statistics.median(naive) * 1000
    gateway_ms = statistics.median(fast) * 1000
    return {
        "groups": STREAMS * GROUPS,
        "naive_ms": round(naive_ms, 1),
        "gateway_ms": round(gateway_ms, 1),
        "ratio": round(naive_ms / gateway_ms, 1),
        "redis": version,
        "hiredis": HIREDIS_AVAILABLE,
        "gateway_all_ages_ms": round(statistics.median(all_ages) * 1000, 1),
        "gateway_lags_ms": round(statistics.median(lags) * 1000, 1),
        "gateway_dead_letters_ms": round(statistics.median(with_dlq) * 1000, 1),
        "gateway_server_ms": round(script.get("usec", 0) / 1000 / AGE_EVERY, 1),
        "longest_script_ms": round(script.get("usec_per_call", 0) / 1000, 2),
        "rounds": rounds,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="7.0", choices=["7.0", "8.2"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.redis, args.rounds))))
