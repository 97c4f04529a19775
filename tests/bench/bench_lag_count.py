"""lag_count: the longest observe script when XDEL tombstones make lags null (issue 15).

10 streams (one script's batch) x 3 groups, 2,000 entries of 1 KB each, every group at the
start with a tombstone after it: Redis reports each lag null and the operator counts it.
Side by side, rounds alternating, on one redis-server (7.0 and 8.2), each script's own time
from SLOWLOG (microseconds, measured by Redis):

- ``before``: the counting the observe script did until now, one ``XRANGE ... COUNT 1000``
  per null-lag group (the rest of the script is unchanged, so it is left out here);
- ``after``: ``RedisGateway.observe`` itself: reads of 100 entries within the script's
  budget (``lag_count_budget``, 1,000 entries a script), lower bounds past it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer

from streamherd.decisions.lag import group_lag
from streamherd.gateway import Endpoint, RedisGateway

STREAMS, GROUPS, ENTRIES, ENTRY_BYTES, CAP = 10, 3, 2000, 1024, 1000

BEFORE = """
local n = 0
for _, key in ipairs(KEYS) do
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    if not g[12] then
      n = n + #redis.call('XRANGE', key, '(' .. g[8], '+', 'COUNT', tonumber(ARGV[1]))
    end
  end
end
return n
"""


async def populate(client: aredis.Redis) -> list[str]:
    keys = [f"{{calls}}:conv:{i}" for i in range(STREAMS)]
    for key in keys:
        pipe = client.pipeline(transaction=False)
        for i in range(ENTRIES):
            pipe.xadd(key, {"n": i, "data": "x" * ENTRY_BYTES})
        ids = await pipe.execute()
        for g in range(GROUPS):
            await client.xgroup_create(key, f"g{g}", "0")
        await client.xdel(key, ids[-1])  # a tombstone after every group: lag null
    return keys


async def longest_script_us(client: aredis.Redis) -> int:
    log = await client.slowlog_get(1000)
    durations = [int(e["duration"]) for e in log if "EVAL" in str(e["command"]).upper()]
    await client.slowlog_reset()
    return max(durations)


async def main(version: str, rounds: int) -> dict[str, object]:
    server = RedisServer(version=version).start()
    try:
        client = aredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
        keys = await populate(client)
        gateway = RedisGateway(Endpoint(url=server.url), lag_count_cap=CAP)
        await gateway.connect()
        await client.config_set("slowlog-log-slower-than", 0)
        await client.config_set("slowlog-max-len", 1000)
        before, after = [], []
        counted_before = lower_bounds = 0
        for _ in range(rounds):
            await client.slowlog_reset()
            counted_before = int(await client.eval(BEFORE, len(keys), *keys, CAP))
            before.append(await longest_script_us(client))
            observed = await gateway.observe(keys)
            assert observed.problem is None, observed.message
            after.append(await longest_script_us(client))
            readings = [
                group_lag(stream, group, observed.lag_count_cap)
                for stream in observed.streams.values()
                for group in stream.groups.values()
            ]
            assert all(r.value for r in readings), "a null lag never reads zero or unknown"
            lower_bounds = sum(r.exactness.name == "LOWER_BOUND" for r in readings)
        await gateway.close()
        await client.aclose()
    finally:
        server.cleanup()
    worst_before, worst_after = max(before) / 1000, max(after) / 1000
    return {
        "redis": version,
        "entry_bytes": ENTRY_BYTES,
        "streams": STREAMS,
        "groups": GROUPS,
        "counted_before": counted_before,
        "longest_script_before_ms": round(worst_before, 2),
        "longest_script_after_ms": round(worst_after, 2),
        "ratio": round(worst_before / worst_after, 1),
        "median_script_before_ms": round(statistics.median(before) / 1000, 2),
        "median_script_after_ms": round(statistics.median(after) / 1000, 2),
        "lower_bounds_after": lower_bounds,
        "rounds": rounds,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    results = [asyncio.run(main(version, args.rounds)) for version in ("7.0", "8.2")]
    for result in results[:-1]:
        print(json.dumps(result))
    print(json.dumps({"runs": results}))
