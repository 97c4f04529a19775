"""Failure atomicity of the operator's scripts (issue 10, item 2): a script either completes its
batch or leaves nothing the next pass would do twice. Faults injected per script on real
redis-server 7.0 and 8.2: wrong-type keys, an oversized entry, entries deleted between
batches, SCRIPT FLUSH (also in the middle of a pipeline) and a restart between passes,
SCRIPT KILL of a long script. Every check is by id: no duplicate copy, no duplicate
dead-letter record, nothing lost.

Which faults concern which script: recover.lua reads and writes entries (all of them);
remove_consumers.lua writes no entries (wrong types, lost scripts, kill); observe.lua writes
nothing (wrong types, lost scripts, kill: an error, never a zero); ensure_group.lua reads a
bounded count and writes one group (wrong types, lost scripts; it runs too briefly to kill).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import VERSIONS, RedisServer
from redis import exceptions as rx
from tests.janitor.helpers import deliver, pel, seed, settings

from streamherd.fields import (
    ENTRY_FIELDS_MAX,
    GROUP_FIELD,
    ORIGIN_ID_FIELD,
    PART_FIELD,
    own_fields,
)
from streamherd.gateway import Endpoint, GatewayError, RedisGateway
from streamherd.gateway.client import RECOVER
from streamherd.gateway.recovery import (
    Batch,
    BatchCall,
    Strategy,
    recover,
    recover_batches,
    remove_consumers,
)
from streamherd.observations import EndpointProblem, StreamStatus

KEY, DLQ = "orders", "orders:dlq"


BULK = """
local key, n, every = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, n do redis.call('XADD', key, '*', 'msg', tostring(i)) end
redis.call('XGROUP', 'CREATE', key, 'g', '0')
local got = redis.call('XREADGROUP', 'GROUP', 'g', 'gone', 'COUNT', n, 'STREAMS', key, '>')[1][2]
local kept, acks = {}, {}
for i, e in ipairs(got) do
  if i % every == 1 then kept[#kept + 1] = e[1] else acks[#acks + 1] = e[1] end
  if #acks == 1000 then redis.call('XACK', key, 'g', unpack(acks)); acks = {} end
end
if #acks > 0 then redis.call('XACK', key, 'g', unpack(acks)) end
return kept
"""


async def bulk(r: aredis.Redis, key: str, n: int, every: int) -> list[str]:
    """``n`` entries delivered to "gone", every ``every``-th left pending (written inside
    Redis: seconds faster than from here). Returns the pending ids."""
    return [str(i) for i in await r.eval(BULK, 1, key, n, every)]  # type: ignore[misc]


async def copies(r: aredis.Redis, key: str = KEY) -> list[tuple[str, dict[str, str]]]:
    """The re-queued copies on ``key``: (origin id, fields)."""
    return [(f[ORIGIN_ID_FIELD], f) for _, f in await r.xrange(key) if ORIGIN_ID_FIELD in f]


async def records(r: aredis.Redis, key: str = DLQ) -> list[str]:
    return [f[ORIGIN_ID_FIELD] for _, f in await r.xrange(key)]


async def drain(
    gateway: RedisGateway, *, consumer: str | None = None, min_idle_ms: int = 0, **options: Any
) -> list[Batch]:
    batches, start = [], "-"
    while True:
        batch = await recover(
            gateway,
            KEY,
            "g",
            options.pop("settings", settings()),
            dead_letter=options.pop("dead_letter", DLQ),
            start=start,
            consumer=consumer,
            min_idle_ms=min_idle_ms,
        )
        batches.append(batch)
        if batch.next_start is None:
            return batches
        start = batch.next_start


# ------------------------------------------------------------------ wrong-type keys


async def test_a_dead_letter_key_of_another_type_holds_the_poison_and_copies_nothing_twice(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """The issue's reproduction: three pending entries, the third poison, the dead-letter key
    holding a string. Before: the script failed at the poison entry after copying the first
    two and before acknowledging them: XLEN 3 -> 5 -> 7 -> 9, one pass each, PEL 3."""
    ids = await seed(r, KEY, 3)
    await deliver(r, KEY, "gone", 3)
    await r.xreadgroup("g", "gone", {KEY: "0"}, count=3)  # all delivered twice
    await r.xclaim(KEY, "g", "gone", 0, [ids[2]])  # the third three times: poison
    await r.set(DLQ, "not a stream")
    lengths, batches = [], []
    for _ in range(3):
        batches.append(
            await recover(
                gateway, KEY, "g", settings(max_deliveries=3), dead_letter=DLQ, consumer="gone"
            )
        )
        lengths.append(await r.xlen(KEY))
    assert lengths == [5, 5, 5], "each good entry copied once, in the first pass"
    assert [origin for origin, _ in await copies(r)] == ids[:2]
    assert set(await pel(r, KEY)) == {ids[2]}, "the poison is held, not lost"
    assert [(b.requeued, b.held, b.dead_letter_type) for b in batches] == [
        (2, 1, "string"),
        (0, 1, "string"),
        (0, 1, "string"),
    ]
    assert await r.get(DLQ) == "not a stream", "never written"


async def test_a_stream_key_of_another_type_fails_before_anything_is_written(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await r.set(KEY, "x")
    with pytest.raises(GatewayError) as failure:
        await recover(gateway, KEY, "g", settings(), dead_letter=DLQ, consumer="c")
    assert failure.value.problem is EndpointProblem.WRONG_TYPE
    assert await r.exists(DLQ) == 0 and await r.get(KEY) == "x"
    assert await remove_consumers(gateway, {KEY: [("c", 0)]}, "g") == {KEY: []}
    (ensured,) = await gateway.ensure_groups([KEY], "g", "0", create_stream=True)
    assert isinstance(ensured, GatewayError) and ensured.problem is EndpointProblem.WRONG_TYPE
    observed = await gateway.observe([KEY])
    assert observed.streams[KEY].status is StreamStatus.WRONG_TYPE, "an error, never a zero"


# ------------------------------------------------------------------ what one entry carries


def wide(n: int) -> dict[str, str]:
    return {f"f{i:05d}": f"v{i}" for i in range(n)}


async def test_an_oversized_entry_is_dead_lettered_in_parts_and_the_batch_goes_on(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """More fields than one command can copy (Lua's unpack limit is ~8,000 values; before, the
    whole batch failed with "too many results to unpack"): never re-queued, dead-lettered in
    parts that hold all its fields in order; the other entries of the batch are re-queued."""
    before = await seed(r, KEY, 2)
    big_fields = wide(ENTRY_FIELDS_MAX * 2 + 10)
    big = str(await r.xadd(KEY, big_fields))  # type: ignore[arg-type]
    after = await seed(r, KEY, 2, start=2)
    await deliver(r, KEY, "gone", 5)

    (batch,) = await drain(gateway, consumer="gone")

    assert (batch.requeued, batch.dead_lettered, batch.oversized, batch.failed) == (4, 1, 1, 0)
    assert [origin for origin, _ in await copies(r)] == before + after
    parts = [f for _, f in await r.xrange(DLQ)]
    assert [p[PART_FIELD] for p in parts] == ["1/3", "2/3", "3/3"]
    assert {p[ORIGIN_ID_FIELD] for p in parts} == {big} and {p[GROUP_FIELD] for p in parts} == {"g"}
    joined: dict[str, str] = {}
    for part in parts:
        assert len(own_fields(part)) <= ENTRY_FIELDS_MAX
        joined.update(own_fields(part))
    assert joined == big_fields, "nothing of it lost"
    assert list(joined) == list(big_fields), "in order"
    assert await pel(r, KEY) == {}
    assert await drain(gateway, consumer="gone") == [Batch(None, 0, 0, 0, 0, 0, 0, 0)]


async def test_an_oversized_entry_without_a_dead_letter_stream_is_held_and_claim_keeps_its_id(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    big = str(await r.xadd(KEY, wide(ENTRY_FIELDS_MAX + 1)))  # type: ignore[arg-type]
    await r.xgroup_create(KEY, "g", "0")
    await deliver(r, KEY, "gone", 1)
    (held,) = await drain(gateway, consumer="gone", dead_letter=None)
    assert (held.held, held.oversized, held.requeued) == (1, 1, 0)
    assert await r.xlen(KEY) == 1 and set(await pel(r, KEY)) == {big}

    claimed = await recover(
        gateway,
        KEY,
        "g",
        settings(Strategy.CLAIM),
        dead_letter=None,
        consumer="gone",
        targets=["live"],
    )
    assert (claimed.claimed, claimed.oversized) == (1, 0), "a claim copies nothing"
    assert await pel(r, KEY) == {big: ("live", 1)}


async def test_an_entry_at_the_bound_is_still_re_queued_whole(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    fields = wide(ENTRY_FIELDS_MAX)
    origin = str(await r.xadd(KEY, fields))  # type: ignore[arg-type]
    await r.xgroup_create(KEY, "g", "0")
    await deliver(r, KEY, "gone", 1)
    (batch,) = await drain(gateway, consumer="gone")
    assert (batch.requeued, batch.oversized) == (1, 0)
    ((copied_from, copy),) = await copies(r)
    assert copied_from == origin and own_fields(copy) == fields


# ------------------------------------------------------------------ entries deleted in between


async def test_entries_deleted_between_batches_are_dropped_and_the_rest_moved_once(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await seed(r, KEY, 60)
    await deliver(r, KEY, "gone", 60)
    gone = {ids[i] for i in (3, 12, 25, 26, 59)}  # behind the cursor and ahead of it
    batches: list[Batch] = []
    start = "-"
    while True:
        batch = await recover(
            gateway,
            KEY,
            "g",
            settings(batch_size=10),
            dead_letter=DLQ,
            start=start,
            consumer="gone",
        )
        batches.append(batch)
        if len(batches) == 2:
            await r.xdel(KEY, *gone)  # 3 and 12 were moved already; the rest not yet
        if batch.next_start is None:
            break
        start = batch.next_start
    moved = [origin for origin, _ in await copies(r)]
    assert len(moved) == len(set(moved)), "no entry re-queued twice"
    assert set(moved) == set(ids) - {ids[25], ids[26], ids[59]}
    assert sum(b.dropped for b in batches) == 3
    assert await pel(r, KEY) == {}


# ------------------------------------------------------------------ scripts lost


async def test_a_script_flush_inside_a_pipeline_re_runs_only_the_calls_that_got_noscript(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """One NOSCRIPT path: the calls that ran keep their results and are never sent again.
    (Before, the whole pipeline was re-run: here the INCR twice, and the first batch's counts
    replaced by a second run's zeros, so the janitor under-reported what it moved.)"""
    for key in ("a", "b"):
        await seed(r, key, 4)
        await deliver(r, key, "gone", 4)
    await gateway.connect()
    call = [
        RECOVER.command(*args)
        for args in (
            (["a", "a:dlq"], ["g", "gone", "-", 0, 100, 5, 1000, "requeue", 0, ENTRY_FIELDS_MAX]),
            (["b", "b:dlq"], ["g", "gone", "-", 0, 100, 5, 1000, "requeue", 0, ENTRY_FIELDS_MAX]),
        )
    ]
    results = await gateway.pipeline(
        [("INCR", "side-effect"), call[0], ("SCRIPT", "FLUSH"), call[1]]
    )
    assert await r.get("side-effect") == "1", "nothing before the NOSCRIPT ran twice"
    assert [results[1][2], results[3][2]] == [4, 4], "each batch's own counts: 4 re-queued"
    for key in ("a", "b"):
        assert len(await copies(r, key)) == 4 and await pel(r, key) == {}


async def test_script_flush_between_passes(gateway: RedisGateway, r: aredis.Redis) -> None:
    for key in ("a", "b", "c"):
        await seed(r, key, 30)
        await deliver(r, key, "gone", 30)
    calls = [BatchCall(k, f"{k}:dlq", consumer="gone") for k in ("a", "b", "c")]
    first = await recover_batches(gateway, "g", settings(batch_size=10), calls)
    await r.script_flush()
    starts = [b.next_start for b in first if isinstance(b, Batch)]
    second = await recover_batches(
        gateway,
        "g",
        settings(batch_size=100),
        [
            BatchCall(c.key, c.dead_letter, s or "-", "gone")
            for c, s in zip(calls, starts, strict=True)
        ],
    )
    assert [b.requeued for b in first + second if isinstance(b, Batch)] == [10] * 3 + [20] * 3
    for key in ("a", "b", "c"):
        moved = [origin for origin, _ in await copies(r, key)]
        assert len(moved) == len(set(moved)) == 30


@pytest.fixture(params=VERSIONS, ids=lambda v: f"redis-{v}")
async def restartable(request: pytest.FixtureRequest) -> AsyncIterator[RedisServer]:
    """A server of its own (the shared one is not restarted under other tests)."""
    server = RedisServer(version=request.param).start()
    yield server
    server.cleanup()


async def test_a_restart_between_passes_loses_the_scripts_not_the_work(
    restartable: RedisServer,
) -> None:
    r = aredis.Redis.from_url(restartable.url, decode_responses=True)
    gateway = RedisGateway(Endpoint(url=restartable.url))
    try:
        ids = await seed(r, KEY, 40)
        await deliver(r, KEY, "gone", 40)
        await r.xreadgroup("g", "gone", {KEY: "0"}, count=5)  # 5 poison (2 deliveries)
        spec = settings(max_deliveries=2, batch_size=15)
        first = await recover(gateway, KEY, "g", spec, dead_letter=DLQ, consumer="gone")
        await r.save()  # the data survives the restart (an RDB); the scripts do not
        await r.aclose()
        await asyncio.to_thread(restartable.restart)
        r = aredis.Redis.from_url(restartable.url, decode_responses=True)
        assert await r.script_exists(RECOVER.sha) == [False]
        rest = await drain(gateway, consumer="gone", settings=spec)
        assert first.dead_lettered == 5 and sum(b.requeued for b in [first, *rest]) == 35
        assert sorted(await records(r)) == ids[:5]
        moved = [origin for origin, _ in await copies(r)]
        assert moved == ids[5:], "each once, in order"
        assert await pel(r, KEY) == {}
        removed = await remove_consumers(gateway, {KEY: [("gone", 0)]}, "g")
        assert removed == {KEY: ["gone"]}
    finally:
        await gateway.close()
        await r.aclose()


# ------------------------------------------------------------------ SCRIPT KILL


async def kill_while_running(r: aredis.Redis, running: asyncio.Future[Any]) -> str | None:
    """SCRIPT KILL as soon as Redis accepts it (past busy-reply-threshold), while ``running``
    is not done: "killed", "unkillable" (it had written: Redis lets it finish), or None."""
    while not running.done():
        try:
            await r.execute_command("SCRIPT", "KILL")
            return "killed"
        except rx.ResponseError as exc:
            if "UNKILLABLE" in str(exc):
                return "unkillable"
            if "NOTBUSY" not in str(exc):
                raise
        await asyncio.sleep(0.001)
    return None


@contextlib.asynccontextmanager
async def busy_after_1ms(r: aredis.Redis) -> AsyncIterator[None]:
    await r.config_set("busy-reply-threshold", 1)
    try:
        yield
    finally:
        await r.config_set("busy-reply-threshold", 5000)


ATTEMPTS = 20
"""How often a kill is tried: on a loaded machine the killer may be scheduled only after the
script ended. Each attempt starts from the same state, so an attempt that was not killed
(it did its work) leaves nothing that the next one's checks would count."""


# 8.2 in the suite; 7.0's and Valkey's runs under make e2e: 200,000 entries, the slowest
# test of the module (the script is the same on each)
@pytest.mark.e2e_variants("redis-7.0", "valkey-9.1")
async def test_a_recover_batch_killed_before_writing_did_nothing_and_the_next_pass_does_it_once(
    gateway: RedisGateway, r: aredis.Redis, server: RedisServer
) -> None:
    """A long batch (sparse pending entries: many reads before the first write) is killed:
    Redis kills a script only before its first write, and recover.lua writes nothing before
    it has read everything; so the batch did nothing, and the next pass does it all once."""
    await gateway.connect()
    killer = aredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
    outcomes = []
    try:
        async with busy_after_1ms(r):
            for _ in range(ATTEMPTS):
                await r.delete(KEY, DLQ)  # the same state again, whatever the last attempt did
                keep = await bulk(r, KEY, 200_000, every=4)
                running = asyncio.ensure_future(
                    recover(
                        gateway,
                        KEY,
                        "g",
                        settings(batch_size=len(keep)),
                        dead_letter=DLQ,
                        consumer="gone",
                    )
                )
                outcome = await kill_while_running(killer, running)
                failure = None
                try:
                    await running
                except GatewayError as exc:
                    failure = exc.message
                assert (failure is not None) is (outcome == "killed"), failure
                assert failure is None or "killed" in failure.lower(), failure
                outcomes.append(outcome)
                if outcome == "killed":
                    break
        assert outcomes[-1] == "killed", f"never killed in its read phase: {outcomes}"
        assert await copies(r) == [] and set(await pel(r, KEY)) == set(keep), "nothing done"
        await drain(gateway, consumer="gone", settings=settings(batch_size=500))
        moved = [origin for origin, _ in await copies(r)]
        assert moved == keep, "each once, in order"
        assert await pel(r, KEY) == {}
    finally:
        await killer.aclose()


async def test_observe_killed_is_an_error_never_a_zero_and_the_next_poll_reads(
    gateway: RedisGateway, r: aredis.Redis, server: RedisServer
) -> None:
    """observe.lua writes nothing, so Redis can always kill it."""
    # One call over 3,000 streams of 10 groups each: long enough (in Lua steps, which is
    # when Redis looks at other clients during a script) to be killed.
    keys = [f"s{i}" for i in range(3000)]
    await r.eval(
        """for _, key in ipairs(KEYS) do
             redis.call('XADD', key, '*', 'msg', 'x')
             for g = 0, 9 do redis.call('XGROUP', 'CREATE', key, 'g' .. g, '0') end
           end""",
        len(keys),
        *keys,
    )  # type: ignore[misc]
    await gateway.connect()
    big = RedisGateway(Endpoint(url=server.url), streams_per_script=len(keys))
    killer = aredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
    try:
        await big.connect()
        async with busy_after_1ms(r):
            for _ in range(ATTEMPTS):
                running = asyncio.ensure_future(big.observe(keys))
                outcome = await kill_while_running(killer, running)
                observation = await running
                if outcome == "killed":
                    break
        assert outcome == "killed"
        assert all(s.status is StreamStatus.ERROR for s in observation.streams.values())
        assert all(not s.groups for s in observation.streams.values()), "nothing read as zero"
        again = await big.observe(keys)
        assert all(len(again.streams[k].groups) == 10 for k in keys)
        assert {again.group(k, "g9").reported_lag for k in keys} == {1}  # type: ignore[union-attr]
    finally:
        await killer.aclose()
        await big.close()


async def test_remove_consumers_killed_removes_nothing_and_runs_once_after(
    gateway: RedisGateway, r: aredis.Redis, server: RedisServer
) -> None:
    """remove_consumers.lua reads every consumer before it removes any: killed, it removed
    none; the next call removes each once."""
    await seed(r, KEY, 1)
    pipe = r.pipeline(transaction=False)
    names = [f"c{i}" for i in range(20_000)]
    for name in names:
        pipe.xgroup_createconsumer(KEY, "g", name)
    await pipe.execute()
    await gateway.connect()
    killer = aredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
    removals = {KEY: [(name, 0) for name in names[:10]]}
    try:
        async with busy_after_1ms(r):
            for _ in range(ATTEMPTS):
                for name in names[:10]:  # the same state again, whatever the last attempt did
                    await r.xgroup_createconsumer(KEY, "g", name)
                running = asyncio.ensure_future(remove_consumers(gateway, removals, "g"))
                outcome = await kill_while_running(killer, running)
                with contextlib.suppress(GatewayError):
                    await running
                if outcome == "killed":
                    break
        assert outcome == "killed"
        assert len(await r.xinfo_consumers(KEY, "g")) == 20_000, "none removed"
        assert await remove_consumers(gateway, removals, "g") == {KEY: names[:10]}
        assert len(await r.xinfo_consumers(KEY, "g")) == 19_990
    finally:
        await killer.aclose()


async def test_ensure_group_after_lost_scripts_creates_once_and_adopts_after(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await gateway.connect()
    await r.script_flush()
    (created,) = await gateway.ensure_groups([KEY], "g", "0", create_stream=True)
    await r.script_flush()
    (again,) = await gateway.ensure_groups([KEY], "g", "$", create_stream=True)
    assert [str(getattr(o, "outcome", o)) for o in (created, again)] == ["Created", "Adopted"]
    assert [g["name"] for g in await r.xinfo_groups(KEY)] == ["g"]
