"""recovery: the three ways to hand a group's stranded work back on streams other groups read.

1,000 call streams ``conv:<i>`` read by three groups (brain, compliance, crm), as in the
flagship example; compliance and crm are done with everything; brain's crashed consumer holds
100 entries on each of 10 streams (1,000 stranded). Each strategy recovers them for brain:

(a) claim: recover.lua, strategy Claim (XCLAIM JUSTID to a live consumer; the product's);
(b) requeue: recover.lua, strategy Requeue (copy tagged streamherd-group + XACK; the product's);
(c) retry: a benchmark-only script moving each entry to a per-group retry stream in the
    stream's hash slot, ``{conv:<i>}:retry:brain`` (copy + XACK), which brain's consumers read
    in the same XREADGROUP as the call streams. Not product code.

Reported per strategy: ``janitor_us_per_entry`` (the janitor's calls, wall clock, one pipeline
of one call per stream); ``other_groups_lag`` (compliance + crm lag right after: what their
autoscaling sees); ``other_groups_read_us`` (what their consumers then spend reading and
acknowledging copies that are not theirs); ``brain_read_us`` (brain's live consumer getting
the 1,000 entries back); ``idle_read_us`` (one read by an SDK consumer over all 1,000 streams
when nothing is new - paid on every read loop; for claim, plus a history read every second,
``history_read_us``) and ``extra_keys`` (keys each strategy adds). Rounds interleave
(a, b, c, a, ...), medians reported.
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
from redis.utils import HIREDIS_AVAILABLE

from streamherd.fields import is_copy_for_another_group
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.gateway.recovery import BatchCall, RecoverySettings, Strategy, recover_batches

STREAMS, ACTIVE, STRANDED, QUIET = 1000, 10, 100, 5
GROUPS = ("brain", "compliance", "crm")
DEAD, LIVE = "brain-7d9f8c6b5a-dead0", "brain-7d9f8c6b5a-live0"
READS = 20

POPULATE = """
-- KEYS: the streams; ARGV[1]: entries on the first ACTIVE streams, ARGV[2]: on the rest,
-- ARGV[3]: ACTIVE
local active, quiet, nactive = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  local n = i <= nactive and active or quiet
  for j = 1, n do redis.call('XADD', key, '*', 'speaker', 'caller', 'text', 'hello ' .. j) end
  for _, g in ipairs({'brain', 'compliance', 'crm'}) do
    redis.call('XGROUP', 'CREATE', key, g, '0')
    local consumer = g .. '-7d9f8c6b5a-live0'
    if g == 'brain' and i <= nactive then consumer = 'brain-7d9f8c6b5a-dead0' end
    local got = redis.call('XREADGROUP', 'GROUP', g, consumer, 'COUNT', n, 'STREAMS', key, '>')
    if consumer ~= 'brain-7d9f8c6b5a-dead0' then
      for _, e in ipairs(got[1][2]) do redis.call('XACK', key, g, e[1]) end
    end
  end
end
return 1
"""

RETRY = """
-- Benchmark only: move every pending entry of a consumer to {key}:retry:<group>.
-- KEYS[1] stream, KEYS[2] retry stream; ARGV: group, consumer, count
local key, retry, group, consumer = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
if redis.call('EXISTS', retry) == 0 then
  redis.call('XGROUP', 'CREATE', retry, group, '0', 'MKSTREAM')
end
local pel = redis.call('XPENDING', key, group, '-', '+', tonumber(ARGV[3]), consumer)
for _, p in ipairs(pel) do
  local e = redis.call('XRANGE', key, p[1], p[1])[1]
  if e then
    redis.call('XADD', retry, '*', 'streamherd-origin-id', p[1], 'streamherd-deliveries', p[4],
      unpack(e[2]))
  end
  redis.call('XACK', key, group, p[1])
end
return #pel
"""


def retry_key(key: str) -> str:
    return "{" + key + "}:retry:brain"


async def populate(client: aredis.Redis, keys: list[str]) -> None:
    await client.flushall()
    for i in range(0, len(keys), 100):
        await client.eval(
            POPULATE,
            len(keys[i : i + 100]),
            *keys[i : i + 100],
            STRANDED,
            QUIET,
            ACTIVE if i == 0 else 0,
        )  # type: ignore[misc]


async def lag(client: aredis.Redis, keys: list[str], group: str) -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.xinfo_groups(key)
    total = 0
    for groups in await pipe.execute():
        total += sum(int(g["lag"] or 0) for g in groups if g["name"] == group)
    return total


async def drain_reads(
    client: aredis.Redis, group: str, consumer: str, streams: dict[str, str], *, own_only: bool
) -> int:
    """Read until nothing comes back (from ``streams``' ids), acking everything; copies made
    for another group are acknowledged unprocessed, as the SDK does. Returns entries handed
    to the handler."""
    handed = 0
    positions = dict(streams)
    while True:
        reply = await client.xreadgroup(group, consumer, positions, count=100)
        entries = [(k, e) for k, items in reply or [] for e in items]
        if not entries:
            return handed
        pipe = client.pipeline(transaction=False)
        for key, (entry_id, fields) in entries:
            if not (own_only and is_copy_for_another_group(fields, group)):
                handed += 1
            pipe.xack(key, group, entry_id)
            if positions[key] != ">":
                positions[key] = entry_id
        await pipe.execute()


async def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await fn
    return time.perf_counter() - started, result


async def idle_read_us(
    client: aredis.Redis, streams: dict[str, str], group: str, consumer: str
) -> float:
    times = []
    for _ in range(READS):
        elapsed, reply = await timed(client.xreadgroup(group, consumer, streams, count=10))
        assert not any(items for _, items in reply or []), "the idle read found something"
        times.append(elapsed)
    return statistics.median(times) * 1e6


async def round_of(
    name: str, client: aredis.Redis, gateway: RedisGateway, keys: list[str]
) -> dict[str, float]:
    await populate(client, keys)
    stranded = keys[:ACTIVE]
    out: dict[str, float] = {}
    if name in ("claim", "requeue"):
        strategy = Strategy.CLAIM if name == "claim" else Strategy.REQUEUE
        settings = RecoverySettings(
            strategy, max_deliveries=5, batch_size=500, dead_letter_cap=1000
        )
        calls = [BatchCall(k, f"{k}:dlq", consumer=DEAD, targets=[LIVE]) for k in stranded]
        elapsed, batches = await timed(recover_batches(gateway, "brain", settings, calls))
        moved = sum(getattr(b, "recovered", 0) for b in batches)
    else:
        sha = await client.script_load(RETRY)
        pipe = client.pipeline(transaction=False)
        for key in stranded:
            pipe.evalsha(sha, 2, key, retry_key(key), "brain", DEAD, 500)
        elapsed, counts = await timed(pipe.execute())
        moved = sum(counts)
    assert moved == ACTIVE * STRANDED, f"{name} moved {moved}"
    out["janitor_us_per_entry"] = elapsed / moved * 1e6
    out["other_groups_lag"] = await lag(client, keys, "compliance") + await lag(client, keys, "crm")

    others = 0.0
    for group in ("compliance", "crm"):
        elapsed, handed = await timed(
            drain_reads(
                client, group, f"{group}-7d9f8c6b5a-live0", dict.fromkeys(keys, ">"), own_only=True
            )
        )
        assert handed == 0, f"{group} was handed {handed} entries of brain's"
        others += elapsed
    out["other_groups_read_us"] = others * 1e6

    brain_streams = dict.fromkeys(keys, "0" if name == "claim" else ">")
    if name == "retry":
        brain_streams.update(dict.fromkeys((retry_key(k) for k in stranded), ">"))
    elapsed, handed = await timed(drain_reads(client, "brain", LIVE, brain_streams, own_only=True))
    assert handed == ACTIVE * STRANDED, f"brain got {handed} back"
    out["brain_read_us"] = elapsed * 1e6

    idle_keys = dict.fromkeys(keys, ">")
    if name == "retry":  # every read covers each call stream's retry stream too
        for key in keys:
            if not await client.exists(retry_key(key)):
                await client.xgroup_create(retry_key(key), "brain", "0", mkstream=True)
        idle_keys.update(dict.fromkeys((retry_key(k) for k in keys), ">"))
    out["idle_read_us"] = await idle_read_us(client, idle_keys, "brain", LIVE)
    out["history_read_us"] = (
        await idle_read_us(client, dict.fromkeys(keys, "0"), "brain", LIVE)
        if name == "claim"
        else 0.0
    )
    out["extra_keys"] = float(len(await client.keys("*:retry:*")))
    return out


async def main(version: str, rounds: int) -> dict[str, object]:
    server = RedisServer(version=version).start()
    keys = [f"conv:{i}" for i in range(STREAMS)]
    results: dict[str, list[dict[str, float]]] = {"claim": [], "requeue": [], "retry": []}
    try:
        client = aredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
        gateway = RedisGateway(Endpoint(url=server.url), command_timeout=60)
        await gateway.connect()  # connecting (and loading scripts) is not part of a round
        for _ in range(rounds):
            for name in results:
                results[name].append(await round_of(name, client, gateway, keys))
        await gateway.close()
        await client.aclose()
    finally:
        server.cleanup()
    summary: dict[str, object] = {}
    for name, runs in results.items():
        summary[name] = {
            metric: round(statistics.median(run[metric] for run in runs), 1) for metric in runs[0]
        }
    summary.update(
        streams=STREAMS,
        stranded=ACTIVE * STRANDED,
        redis=version,
        hiredis=HIREDIS_AVAILABLE,
        rounds=rounds,
    )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="7.0", choices=["7.0", "8.2"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.redis, args.rounds))))
