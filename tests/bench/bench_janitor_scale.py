"""janitor-scale: one janitor pass of every group over 5,000 call streams x 3 groups.

Every stream ``conv:<i>`` is read by brain, compliance and crm, each through a consumer named
after a live pod that has acknowledged everything (nothing pending, one consumer); 10 of the
streams hold 100 stale entries per group (3,000 in all), left by a consumer without a pod.
The operator's poll (``RedisGateway.observe``, shared with autoscaling, not part of a pass)
tells the janitor which streams have anything pending.

- ``pass_ms``, ``round_trips``: one pass of each of the three groups (run at once, as the
  operator's three janitors do), once they have looked at the idle streams' consumers before
  (``cold_*``: the first passes, which do, at most 1,000 streams per group and pass).
- ``recovered``, ``lost``, ``duplicated``: by id, per group: each stranded entry re-queued
  once, as a copy tagged for its group, or still pending (lost = neither).
Goal (issue 10): pass_ms <= 100 and round_trips <= 30, independent of the 4,990 idle streams.
Medians over rounds (each built from scratch).
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
from streamherd.api.durations import Duration
from streamherd.controller.janitor_pass import Progress, observed_states, run_pass
from streamherd.decisions.recovery import Pods
from streamherd.fields import GROUP_FIELD, ORIGIN_ID_FIELD
from streamherd.gateway import Endpoint, RedisGateway

STREAMS, ACTIVE, STALE = 5000, 10, 100
GROUPS = ("brain", "compliance", "crm")
MIN_IDLE = Duration.parse("100ms")

IDLE = """
-- Every key: 3 entries, the three groups, each read and acknowledged by its live pod.
for _, key in ipairs(KEYS) do
  for j = 1, 3 do redis.call('XADD', key, '*', 'speaker', 'caller', 'text', 'hello') end
  for _, g in ipairs({'brain', 'compliance', 'crm'}) do
    redis.call('XGROUP', 'CREATE', key, g, '0')
    local got = redis.call('XREADGROUP', 'GROUP', g, g .. '-7d9f8c6b5a-live0', 'STREAMS', key, '>')
    for _, e in ipairs(got[1][2]) do redis.call('XACK', key, g, e[1]) end
  end
end
return 1
"""

STRANDED = """
-- KEYS: the active streams; ARGV[1] entries per group. Returns "<key> <group> <id>" of each.
local n, out = tonumber(ARGV[1]), {}
for _, key in ipairs(KEYS) do
  for j = 1, n do redis.call('XADD', key, '*', 'speaker', 'caller', 'text', 'turn ' .. j) end
  for _, g in ipairs({'brain', 'compliance', 'crm'}) do
    local got = redis.call('XREADGROUP', 'GROUP', g, 'stuck-' .. g, 'STREAMS', key, '>')
    for _, e in ipairs(got[1][2]) do out[#out + 1] = key .. ' ' .. g .. ' ' .. e[1] end
  end
end
return out
"""


def pods(group: str) -> Pods:
    live = frozenset({f"{group}-7d9f8c6b5a-live0"})
    return Pods(f"{group}-7d9f8c6b5a", live, live)


async def passes(
    gateway: RedisGateway, keys: list[str], progress: dict[str, Progress]
) -> tuple[float, int, int]:
    """One pass of every group, at once, after a poll: (ms, round trips, entries recovered)."""
    observation = await gateway.observe(keys)
    spec = Recovery().model_copy(update={"min_idle": MIN_IDLE})
    before = gateway.round_trips

    async def one(group: str) -> int:
        async def read_pods() -> Pods:
            return pods(group)

        outcome = await run_pass(
            gateway,
            keys,
            group,
            spec,
            pods=read_pods,
            progress=progress[group],
            observed=observed_states(observation, keys, group),
        )
        assert outcome.complete
        return outcome.recovered

    started = time.perf_counter()
    recovered = await asyncio.gather(*(one(group) for group in GROUPS))
    elapsed = time.perf_counter() - started
    return elapsed * 1000, gateway.round_trips - before, sum(recovered)


async def check(client: aredis.Redis, stranded: list[str]) -> tuple[int, int]:
    """(lost, duplicated), by (stream, group, id): ids repeat across streams."""
    wanted = {tuple(item.split(" ")) for item in stranded}
    copies: list[tuple[str, ...]] = []
    pending: set[tuple[str, ...]] = set()
    for key in [f"conv:{i}" for i in range(ACTIVE)]:
        for _, fields in await client.xrange(key):
            if ORIGIN_ID_FIELD in fields:
                copies.append((key, fields[GROUP_FIELD], fields[ORIGIN_ID_FIELD]))
        for group in GROUPS:
            rows = await client.xpending_range(key, group, "-", "+", 10_000)
            pending |= {(key, group, row["message_id"]) for row in rows}
    duplicated = len(copies) - len(set(copies))
    lost = len(wanted - set(copies) - pending)
    assert not set(copies) - wanted, "a copy of something that was not stranded"
    return lost, duplicated


async def round_of(client: aredis.Redis, gateway: RedisGateway) -> dict[str, float]:
    keys = [f"conv:{i}" for i in range(STREAMS)]
    await client.flushall()
    for i in range(0, STREAMS, 500):
        await client.eval(IDLE, len(keys[i : i + 500]), *keys[i : i + 500])  # type: ignore[misc]
    progress = {group: Progress() for group in GROUPS}
    cold_ms, cold_trips = [], 0
    while True:  # the first passes: every idle stream's consumers looked at, once
        ms, trips, _ = await passes(gateway, keys, progress)
        if trips == 0:
            break
        cold_ms.append(ms)
        cold_trips += trips
    stranded = [
        str(item)
        for item in await client.eval(STRANDED, ACTIVE, *keys[:ACTIVE], STALE)  # type: ignore[misc]
    ]
    await asyncio.sleep(MIN_IDLE.seconds * 2)  # stale
    pass_ms, round_trips, recovered = await passes(gateway, keys, progress)
    lost, duplicated = await check(client, stranded)
    return {
        "pass_ms": pass_ms,
        "round_trips": round_trips,
        "recovered": recovered,
        "lost": lost,
        "duplicated": duplicated,
        "cold_passes": len(cold_ms),
        "cold_pass_ms": max(cold_ms),
        "cold_round_trips": cold_trips,
    }


async def main(version: str, rounds: int) -> dict[str, object]:
    server = RedisServer(version=version).start()
    try:
        client = aredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
        gateway = RedisGateway(Endpoint(url=server.url), command_timeout=60)
        await gateway.connect()
        results = [await round_of(client, gateway) for _ in range(rounds)]
        await gateway.close()
        await client.aclose()
    finally:
        server.cleanup()

    def median(name: str) -> float:
        return statistics.median(r[name] for r in results)

    return {
        "streams": STREAMS,
        "groups": len(GROUPS),
        "pass_ms": round(median("pass_ms"), 1),
        "round_trips": int(median("round_trips")),
        "recovered": int(median("recovered")),
        "lost": int(max(r["lost"] for r in results)),
        "duplicated": int(max(r["duplicated"] for r in results)),
        "cold_passes": int(median("cold_passes")),
        "cold_pass_ms": round(median("cold_pass_ms"), 1),
        "cold_round_trips": int(median("cold_round_trips")),
        "redis": version,
        "hiredis": HIREDIS_AVAILABLE,
        "rounds": rounds,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="7.0", choices=["7.0", "8.2"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.redis, args.rounds)), separators=(",", ":")))
