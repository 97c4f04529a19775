"""retention: one full pass over 5,000 call streams of 200 entries, 3 groups, one lagging.

Every stream's entries are 3 h old; brain and compliance have consumed everything, crm has
read 120 and acknowledged 100 (pending 100..119, unread 120..199). The flagship example's
policy (maxAge 2h, respectConsumerGroups, approximate, hardMaxLength 100000,
deleteIdleStreamsAfter 6h): everything is older than maxAge, so each stream is trimmed down
to crm's floor and no further.

(a) pass: the operator's own pass (``plan_pass`` + ``advance``: retain.lua per stream,
    pipelined 200 at a time) over the keys its poller discovered;
(b) client_side: what a hand-written cron does, for comparison: per stream, XINFO GROUPS
    and XPENDING per group to find the floor, then XTRIM MINID ~ to it; one round trip per
    command, and not atomic (a group can move between the read and the trim).
Both start from the same freshly built data; run on redis 7.0 (the script's own floor) and
8.2 (the server's ACKED trims, exact). ``unconsumed_dropped``
counts entries crm had not consumed that are gone (checked by id: must be 0). Script call
times come from SLOWLOG (threshold 0) in a third, separate pass (logging costs time); on a
shared 2-core machine the longest includes the odd preemption of redis-server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import redis.asyncio as aredis
from e2e.cluster.redis import RedisServer

from streamherd.api.retentionpolicy import RetentionPolicySpec
from streamherd.controller.context import StreamBinding
from streamherd.controller.polling import Poller, Source
from streamherd.controller.retention import advance, plan_pass
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.gateway.client import RETAIN
from streamherd.metrics import Metrics
from streamherd.observations import ManagedGroup

STREAMS, ENTRIES = 5000, 200
GROUPS = ("brain", "compliance", "crm")
LAGGING, READ, ACKED = "crm", 120, 100
POLICY = RetentionPolicySpec.model_validate(
    {
        "maxAge": "2h",
        "respectConsumerGroups": True,
        "hardMaxLength": 100000,
        "deleteIdleStreamsAfter": "6h",
        "interval": "1m",
    }
)


def key(i: int) -> str:
    return f"conv:{i:05d}"


async def populate(r: aredis.Redis) -> int:
    """Returns the ms of the first entry (entries of stream i at first + i*ENTRIES + n)."""
    await r.flushall()
    first = int(time.time() * 1000) - 3 * 3600 * 1000
    for start in range(0, STREAMS, 50):
        pipe = r.pipeline(transaction=False)
        for i in range(start, start + 50):
            base = first + i * ENTRIES
            for n in range(ENTRIES):
                pipe.xadd(
                    key(i),
                    {"speaker": "caller" if n % 2 else "agent", "text": f"turn {n} of call {i}"},
                    id=f"{base + n}-0",
                )
        await pipe.execute()
    pipe = r.pipeline(transaction=False)
    for i in range(STREAMS):
        for group in GROUPS:
            if group == LAGGING:
                pipe.xgroup_create(key(i), group, "0")
            else:  # everything read and acknowledged
                pipe.xgroup_create(key(i), group, "$")
    await pipe.execute()
    pipe = r.pipeline(transaction=False)
    for i in range(STREAMS):
        pipe.xreadgroup(LAGGING, "crm-1", {key(i): ">"}, count=ACKED)
    replies = await pipe.execute()
    pipe = r.pipeline(transaction=False)
    for i, reply in enumerate(replies):
        pipe.xack(key(i), LAGGING, *[entry_id for entry_id, _ in reply[0][1]])
        pipe.xreadgroup(LAGGING, "crm-1", {key(i): ">"}, count=READ - ACKED)
    await pipe.execute()
    return first


async def unconsumed_gone(r: aredis.Redis, first: int) -> int:
    """crm's pending and unread entries (ids ACKED..ENTRIES-1 of each stream) that are gone."""
    pipe = r.pipeline(transaction=False)
    for i in range(STREAMS):
        base = first + i * ENTRIES
        pipe.xrange(key(i), f"{base + ACKED}-0", "+")
    return sum(ENTRIES - ACKED - len(rows) for rows in await pipe.execute())


async def operator_pass(url: str) -> dict[str, Any]:
    gateway = RedisGateway(Endpoint(url=url))
    poller = Poller(gateway, Metrics(), registry=False, notifications=False, scan_budget=100_000)
    source = Source(pattern="conv:*")
    poller.subscribe("bench", source)
    try:
        await poller.poll_once()  # what the RedisStream's poller knows: every call stream
        binding = StreamBinding("bench", "conversations", source=source, poller=poller)
        managed = tuple(ManagedGroup(g, "$") for g in GROUPS)
        current = plan_pass([binding], POLICY, {"conversations": managed})
        started = time.perf_counter()
        while not current.done:
            await advance(current, budget=3600)
        seconds = time.perf_counter() - started
        return {
            "pass_ms": round(seconds * 1000, 1),
            "trimmed": current.summary.trimmed,
            "held_streams": sum(h.streams for h in current.summary.holds.values()),
            "longest_pipeline_ms": round(current.longest_call * 1000, 1),
        }
    finally:
        await poller.stop()
        await gateway.close()


async def client_side(r: aredis.Redis) -> float:
    cutoff = int(time.time() * 1000) - 2 * 3600 * 1000
    started = time.perf_counter()
    for i in range(STREAMS):
        floors = []
        for g in await r.xinfo_groups(key(i)):
            ms, seq = (int(x) for x in g["last-delivered-id"].split("-"))
            floors.append((ms, seq + 1))
            if g["pending"]:
                (oldest,) = await r.xpending_range(key(i), g["name"], "-", "+", 1)
                ms, seq = (int(x) for x in oldest["message_id"].split("-"))
                floors.append((ms, seq))
        floor = min([*floors, (cutoff, 0)])
        await r.xtrim(key(i), minid=f"{floor[0]}-{floor[1]}", approximate=True)
    return time.perf_counter() - started


async def script_times_ms(r: aredis.Redis) -> list[float]:
    """How long each retain.lua call took (ms), from SLOWLOG."""
    entries = await r.slowlog_get(-1)
    prefix = f"EVALSHA {RETAIN.sha}".encode()
    return sorted(e["duration"] / 1000 for e in entries if bytes(e["command"]).startswith(prefix))


async def run(version: str) -> dict[str, Any]:
    server = RedisServer(version).start()
    r = aredis.Redis.from_url(server.url, decode_responses=True)
    try:
        first = await populate(r)
        before = (await r.info("memory"))["used_memory"]
        measured = await operator_pass(server.url)
        await asyncio.sleep(0.5)  # UNLINK/trim frees in the background: let it finish
        after = (await r.info("memory"))["used_memory"]
        dropped = await unconsumed_gone(r, first)
        streams = len([k async for k in r.scan_iter(match="conv:*", count=10_000)])
        await populate(r)
        cron_s = await client_side(r)
        # Again, with every command logged (SLOWLOG at 0 costs time: not in pass_ms).
        await populate(r)
        await r.config_set("slowlog-max-len", 200_000)  # commands inside scripts are logged too
        await r.config_set("slowlog-log-slower-than", 0)
        await r.slowlog_reset()
        await operator_pass(server.url)
        await r.config_set("slowlog-log-slower-than", 10_000)
        times = await script_times_ms(r)
        assert len(times) >= STREAMS, f"only {len(times)} script calls logged"
        await r.slowlog_reset()
        return {
            "redis": server.version if hasattr(server, "version") else version,
            "streams": streams,
            "pass_ms": measured["pass_ms"],
            "used_memory_before": before,
            "used_memory_after": after,
            "unconsumed_dropped": dropped,
            "trimmed": measured["trimmed"],
            "held_streams": measured["held_streams"],
            "script_ms_p50": round(times[len(times) // 2], 3),
            "script_ms_p99": round(times[int(len(times) * 0.99)], 3),
            "longest_script_ms": round(times[-1], 3),
            "longest_pipeline_ms": measured["longest_pipeline_ms"],
            "client_side_ms": round(cron_s * 1000, 1),
            "speedup": round(cron_s * 1000 / max(measured["pass_ms"], 0.001), 1),
        }
    finally:
        await r.aclose()
        server.cleanup()


def main() -> None:
    results = [asyncio.run(run(version)) for version in ("7.0", "8.2")]
    for result in results:
        print(json.dumps(result), flush=True)
    first = results[0]
    summary = {
        "streams": first["streams"],
        "pass_ms": first["pass_ms"],
        "used_memory_before": first["used_memory_before"],
        "used_memory_after": first["used_memory_after"],
        "unconsumed_dropped": sum(r["unconsumed_dropped"] for r in results),
        "redis_7_0": {
            k: first[k] for k in ("script_ms_p99", "longest_script_ms", "client_side_ms", "speedup")
        },
        "redis_8_2": {
            k: results[1][k]
            for k in (
                "pass_ms",
                "used_memory_before",
                "used_memory_after",
                "script_ms_p99",
                "longest_script_ms",
                "client_side_ms",
                "speedup",
            )
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
