"""A pattern consumer across thousands of call streams: bounded reads, every entry once,
new streams learned from the registry (no keyspace scan after start-up)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aredis
from e2e.cluster.processes import async_wait_until
from e2e.cluster.redis import RedisServer
from tests.consumer.conftest import running
from tests.gateway.helpers import command_calls

from streamherd.consumer import Consumer, Entry, StreamClient

CALLS = 5000
EVENTS = 3
BATCH = 50


async def start_calls(
    publisher: StreamClient, r: aredis.Redis, calls: range
) -> set[tuple[str, str]]:
    """Calls as the demo makes them: events published through the SDK, and the group
    created on each new stream (what the operator does) at the stream's start."""
    ids: set[tuple[str, str]] = set()
    for turn in range(EVENTS):
        for part in range(0, len(calls), 100):  # 100 publishers at a time
            keys = [f"conv:{c}" for c in calls[part : part + 100]]
            added = await asyncio.gather(*(publisher.publish(k, {"msg": k}) for k in keys))
            ids.update(zip(keys, added, strict=True))
        if turn == 0:
            pipe = r.pipeline(transaction=False)
            for c in calls:
                pipe.xgroup_create(f"conv:{c}", "g", id="0")
            await pipe.execute()
    return ids


# 7.0 in the suite; 8.2's and Valkey's runs under make e2e (the SDK's runs on those in the
# suite are the small tests)
@pytest.mark.e2e_variants("redis-8.2", "valkey-9.1")
async def test_thousands_of_pattern_streams(server: RedisServer, r: aredis.Redis) -> None:
    publisher = StreamClient(r)
    expected = await start_calls(publisher, r, range(CALLS))
    handled: list[tuple[str, str]] = []
    reads: list[int] = []

    async def handle_batch(entries: list[Entry]) -> None:
        reads.append(len(entries))
        handled.extend((e.stream, e.id) for e in entries)

    client = StreamClient.from_url(server.url, group="g", consumer="c1")
    c = Consumer(client, pattern="conv:*", batch_handler=handle_batch, batch=BATCH)
    scans_before = await command_calls(r, "scan")
    began = time.monotonic()
    async with running(c) as task:
        await async_wait_until(
            lambda: len(handled) >= len(expected) or task.done(),
            60,
            message=lambda: f"{len(handled)} of {len(expected)} handled",
        )
        drained = time.monotonic() - began
        scans_at_start = await command_calls(r, "scan") - scans_before
        assert scans_at_start >= 1, "one scan at start-up learns the streams that exist"
        # New calls while it runs: learned through the registry of new streams.
        expected |= await start_calls(publisher, r, range(CALLS, CALLS + 100))
        await async_wait_until(
            lambda: len(handled) >= len(expected) or task.done(),
            30,
            message=lambda: f"{len(handled)} of {len(expected)} handled",
        )
        await asyncio.sleep(2.5)  # two more history reads and a sweep: shows no more scans
        assert await command_calls(r, "scan") - scans_before == scans_at_start, (
            "no keyspace scan after start"
        )
        assert not task.done()
    assert set(handled) == expected and len(handled) == len(expected), "each once"
    assert max(reads) <= BATCH, f"a read over {CALLS} streams returned {max(reads)} entries"
    assert len(c.streams.followed) == CALLS + 100
    print(
        f"{len(expected)} entries over {CALLS} streams drained in {drained:.2f}s, {len(reads)} reads"
    )
