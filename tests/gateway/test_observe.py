"""Observation against a real redis-server: every lag trap in redis-streams.md is a test."""

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import VALKEY, RedisServer
from tests.gateway.helpers import command_calls, lag_of
from tests.gateway.test_groups import fill

from streamherd.decisions.sampling import carry_first_unread
from streamherd.decisions.totals import group_totals
from streamherd.gateway import Endpoint, RedisGateway
from streamherd.observations import EndpointProblem, Exactness, Reading, StreamStatus


async def raw_lag(r: aredis.Redis, key: str, group: str) -> object:
    return {g["name"]: g for g in await r.xinfo_groups(key)}[group]["lag"]


async def test_numbers_match_what_redis_reports(gateway: RedisGateway, r: aredis.Redis) -> None:
    await fill(r, "orders", 20)
    await r.xgroup_create("orders", "g", "0")
    await r.xreadgroup("g", "alice", {"orders": ">"}, count=7)
    await r.xreadgroup("g", "bob", {"orders": ">"}, count=3)
    delivered = await r.xrange("orders", count=10)
    await r.xack("orders", "g", *[e[0] for e in delivered[:4]])

    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None
    assert state.pending == 6 and state.consumers == 2
    assert lag.value == 10 and lag.exactness is Exactness.EXACT
    assert lag.value + state.pending == 16  # the backlog
    assert state.entries_read == 10


async def test_null_lag_after_mid_stream_create_is_counted(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await fill(r, "orders", 10)
    await r.xgroup_create("orders", "g", ids[5])  # no ENTRIESREAD: Redis cannot know
    await r.xdel("orders", ids[2])  # and a tombstone before the group
    assert await raw_lag(r, "orders", "g") is None
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None
    assert lag.value == 4 and lag.exactness is Exactness.EXACT


async def test_null_lag_after_xdel_ahead_of_the_group_is_counted(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await fill(r, "orders", 10)
    await r.xgroup_create("orders", "g", "0")
    await r.xreadgroup("g", "c", {"orders": ">"}, count=3)
    await r.xdel("orders", ids[6])
    assert await raw_lag(r, "orders", "g") is None
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None and lag.value == 6 and lag.exactness is Exactness.EXACT


async def test_counting_stops_at_the_cap_and_says_lower_bound(
    server: RedisServer, r: aredis.Redis
) -> None:
    ids = await fill(r, "orders", 300)
    await r.xgroup_create("orders", "g", ids[10])
    gateway = RedisGateway(Endpoint(url=server.url), lag_count_cap=100)
    try:
        lag = lag_of(await gateway.observe(["orders"]), "orders", "g")
    finally:
        await gateway.close()
    assert lag.value == 100 and lag.exactness is Exactness.LOWER_BOUND
    assert lag.display() == ">=100"


async def test_null_lags_past_the_scripts_budget_are_lower_bounds_each_key_in_turn(
    server: RedisServer, r: aredis.Redis
) -> None:
    """A null lag is counted from whole entries, so one script counts at most its budget
    (issue 15: 1,000 full entries per group held the server for tens of ms with 1 KB
    entries). Past it a count is a lower bound (at least the one entry seen), never a zero;
    the keys take turns at the front of the budget, so each is counted exactly in turn."""
    keys = ["conv:1", "conv:2", "conv:3"]
    for key in keys:
        ids = await fill(r, key, 250)
        await r.xgroup_create(key, "g", "0")
        await r.xdel(key, ids[-1])  # a tombstone after the group: Redis says lag null
        assert await raw_lag(r, key, "g") is None
    gateway = RedisGateway(Endpoint(url=server.url), lag_count_budget=300)
    exact: set[str] = set()
    try:
        for _ in range(len(keys)):
            observed = await gateway.observe(keys)
            readings = {key: lag_of(observed, key, "g") for key in keys}
            for key, lag in readings.items():
                if lag.exactness is Exactness.EXACT:
                    assert lag.value == 249
                    exact.add(key)
                else:
                    assert lag.exactness is Exactness.LOWER_BOUND, readings
                    assert lag.value is not None and 1 <= lag.value < 249, readings
            counted = sum(lag.value or 0 for lag in readings.values())
            assert counted <= 300 + 1, f"the budget bounds what one script counts: {readings}"
    finally:
        await gateway.close()
    assert exact == set(keys), "every key had its turn at the front of the budget"


async def test_a_null_lag_with_nothing_after_the_group_is_zero_even_past_the_budget(
    server: RedisServer, r: aredis.Redis
) -> None:
    ahead = await fill(r, "conv:a", 50)
    await r.xgroup_create("conv:a", "g", "0")
    await r.xdel("conv:a", ahead[-1])
    ids = await fill(r, "conv:b", 10)
    await r.xgroup_create("conv:b", "g", "0")
    await r.xreadgroup("g", "c", {"conv:b": ">"}, count=5)
    await r.xdel("conv:b", *ids[5:])  # everything after the group deleted
    assert await raw_lag(r, "conv:b", "g") is None
    gateway = RedisGateway(Endpoint(url=server.url), lag_count_budget=10)
    try:
        for _ in range(2):  # conv:b behind conv:a's count once, then first
            observed = await gateway.observe(["conv:a", "conv:b"])
            assert lag_of(observed, "conv:b", "g") == Reading.exact(0)
            assert lag_of(observed, "conv:a", "g").exactness is Exactness.LOWER_BOUND
    finally:
        await gateway.close()


async def test_group_at_the_tail_after_xdel_behind_it_reads_zero(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    # redis/redis #13337: delete the entries after a group, then read to the end
    ids = await fill(r, "orders", 10)
    await r.xgroup_create("orders", "g", "0")
    await r.xreadgroup("g", "c", {"orders": ">"}, count=10)
    await r.xdel("orders", ids[3], ids[4])
    await r.xadd("orders", {"n": "late"})
    await r.xreadgroup("g", "c", {"orders": ">"})
    reported = await raw_lag(r, "orders", "g")
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None and lag.value == 0
    expected = Exactness.EXACT if reported == 0 else Exactness.CLAMPED
    assert lag.exactness is expected


async def test_stale_lag_at_the_tail_after_trim_reads_zero(
    gateway: RedisGateway, r: aredis.Redis, server: RedisServer
) -> None:
    """redis/redis #13337: on 7.x, trimming ahead of a group and then reading to the end
    leaves Redis reporting lag > 0 for a group with nothing left to read (fixed in 8.0)."""
    await fill(r, "orders", 10)
    await r.xgroup_create("orders", "g", "0")
    await r.xreadgroup("g", "c", {"orders": ">"}, count=1)
    await r.xtrim("orders", maxlen=2, approximate=False)
    await r.xreadgroup("g", "c", {"orders": ">"})
    reported = await raw_lag(r, "orders", "g")
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None and lag.value == 0
    if server.version == "7.0":
        assert reported == 7, "the 7.0 bug this clamp exists for"
        assert lag.exactness is Exactness.CLAMPED
    else:
        assert reported == 0 and lag.exactness is Exactness.EXACT


async def test_stale_lag_beyond_the_stream_length_is_clamped(
    gateway: RedisGateway, r: aredis.Redis, server: RedisServer
) -> None:
    """redis/redis #13473: on 7.x, trimming ahead of a group leaves a lag larger than the
    stream: a group can never lag by more than XLEN. Valkey 9.1 still reports it (it fixed
    #13337 above, not this one)."""
    await fill(r, "orders", 10)
    await r.xgroup_create("orders", "g", "0")
    await r.xreadgroup("g", "c", {"orders": ">"}, count=1)
    await r.xtrim("orders", maxlen=2, approximate=False)
    reported = await raw_lag(r, "orders", "g")
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None and lag.value == 2
    if server.version in ("7.0", VALKEY):
        assert reported == 9
        assert lag.exactness is Exactness.CLAMPED
    else:
        assert reported == 2 and lag.exactness is Exactness.EXACT


async def test_lag_in_seconds_is_the_first_unread_entrys_age_on_redis_clock(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """The first entry after last-delivered-id is looked up only for groups that lag (one
    XRANGE ... COUNT 1 each); a group at the tail costs nothing and has nothing unread."""
    ids = await fill(r, "orders", 10)
    await r.xgroup_create("orders", "behind", "0")
    await r.xgroup_create("orders", "tail", "$")
    await r.xgroup_create("orders", "midway", ids[5])  # no ENTRIESREAD: lag null, counted
    await r.xreadgroup("behind", "c", {"orders": ">"}, count=3)
    await asyncio.sleep(0.3)  # the unread entries get older
    observed = await gateway.observe(["orders"])
    stream = observed.streams["orders"]
    behind, tail, midway = (stream.groups[g] for g in ("behind", "tail", "midway"))
    assert behind.first_unread_id == ids[3]
    assert midway.first_unread_id == ids[6]
    assert tail.first_unread_id is None
    totals = group_totals(observed, ["orders"], "behind")
    assert stream.server_time_ms is not None
    assert totals.lag_age_ms.exactness is Exactness.EXACT
    assert totals.lag_age_ms.value == stream.server_time_ms - int(ids[3].split("-")[0])
    assert (totals.lag_age_ms.value or 0) >= 300
    assert group_totals(observed, ["orders"], "tail").lag_age_ms == Reading.exact(0)


async def test_a_group_that_stays_at_its_position_is_looked_up_once_then_hinted(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """A sleeping group on a busy stream (every group at zero replicas): the first poll looks
    its first unread entry up and says after which position; with that hint later polls run
    no XRANGE for it, and still give the right id while entries keep coming."""
    ids = await fill(r, "orders", 10)
    await r.xgroup_create("orders", "g", "0")
    await r.xgroup_create("orders", "h", "0")
    await r.xreadgroup("g", "c", {"orders": ">"}, count=3)
    await r.xreadgroup("h", "c", {"orders": ">"}, count=3)  # the same position as g
    first = await gateway.observe(["orders"])
    g, h = first.streams["orders"].groups["g"], first.streams["orders"].groups["h"]
    assert g.first_unread_id == h.first_unread_id == ids[3]
    looked_up = {s.looked_up_after for s in (g, h)} - {None}
    assert looked_up == {ids[2]}, "one lookup for a position two groups share"
    hints = carry_first_unread(first.streams, {})
    assert hints == {"orders": f"{ids[2]} {ids[3]}"}
    for _ in range(3):
        await fill(r, "orders", 5)
        before = await command_calls(r, "xrange")
        again = await gateway.observe(["orders"], first_unread_hints=hints)
        assert await command_calls(r, "xrange") == before, "the hint saved the lookup"
        state = again.streams["orders"].groups["g"]
        assert state.first_unread_id == ids[3] and state.looked_up_after is None
        assert lag_of(again, "orders", "g").value == (await r.xlen("orders")) - 3
        hints = carry_first_unread(again.streams, hints)
        assert hints == {"orders": f"{ids[2]} {ids[3]}"}, "a hint sent is kept"


async def moved(r: aredis.Redis, ids: list[str]) -> str:
    await r.xreadgroup("g", "c", {"orders": ">"}, count=2)
    return ids[5]


async def trimmed_past(r: aredis.Redis, ids: list[str]) -> str:
    await r.xtrim("orders", minid=ids[6], approximate=False)
    return ids[6]


async def first_deleted(r: aredis.Redis, ids: list[str]) -> str:
    await r.xtrim("orders", minid=ids[3], approximate=False)  # nothing left at or before the group
    await r.xdel("orders", ids[3])
    return ids[4]


async def deleted_mid_stream(r: aredis.Redis, ids: list[str]) -> str:
    await r.xdel("orders", ids[3])  # its lag turns null: counted, not hinted
    return ids[4]


@pytest.mark.parametrize("change", [moved, trimmed_past, first_deleted, deleted_mid_stream])
async def test_a_hint_is_used_only_where_redis_proves_it_still_holds(
    gateway: RedisGateway, r: aredis.Redis, change: Any
) -> None:
    """The group moved on, the stream was trimmed past the hinted entry, or the entry was
    deleted: the script sees it in the lag and the length, and looks the entry up again."""
    ids = await fill(r, "orders", 10)
    await r.xgroup_create("orders", "g", "0")
    await r.xreadgroup("g", "c", {"orders": ">"}, count=3)
    first = await gateway.observe(["orders"])
    hints = carry_first_unread(first.streams, {})
    assert hints == {"orders": f"{ids[2]} {ids[3]}"}
    truth = await change(r, ids)
    observed = await gateway.observe(["orders"], first_unread_hints=hints)
    assert observed.streams["orders"].groups["g"].first_unread_id == truth


async def test_a_stream_re_created_at_the_same_position_is_the_one_case_a_hint_misleads(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """Why the poller sends no hints on a key's age turn: deleted and re-created between two
    polls, with a group at the same last-delivered-id (and ENTRIESREAD, so its lag is valid)
    and an entry the old stream never had, Redis's state cannot tell. Without the hint the
    lookup is right."""
    for n in range(1, 6):
        await r.xadd("orders", {"n": n}, id=f"{n}00-0")
    await r.xgroup_create("orders", "g", "300-0", entries_read=3)
    hints = carry_first_unread((await gateway.observe(["orders"])).streams, {})
    assert hints == {"orders": "300-0 400-0"}
    await r.delete("orders")
    for entry in ("100-0", "200-0", "300-0", "350-0"):
        await r.xadd("orders", {"n": 1}, id=entry)
    await r.xgroup_create("orders", "g", "300-0", entries_read=3)
    hinted = await gateway.observe(["orders"], first_unread_hints=hints)
    assert hinted.streams["orders"].groups["g"].first_unread_id == "400-0", "misled"
    fresh = await gateway.observe(["orders"])
    assert fresh.streams["orders"].groups["g"].first_unread_id == "350-0"


async def test_lag_in_seconds_of_ids_chosen_by_the_producer_is_unknown(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """XADD key 5-1: the id's "time" is 5 ms after 1970; its age would be 55 years."""
    await r.xadd("legacy", {"n": "1"}, id="5-1")
    await r.xadd("legacy", {"n": "2"}, id="5-2")
    await r.xgroup_create("legacy", "g", "0")
    await r.xreadgroup("g", "c", {"legacy": ">"}, count=1)
    observed = await gateway.observe(["legacy"])
    totals = group_totals(observed, ["legacy"], "g")
    assert observed.streams["legacy"].groups["g"].first_unread_id == "5-2"
    assert totals.lag == Reading.exact(1) and totals.lag_age_ms == Reading.unknown()
    assert totals.pending == 1 and totals.oldest_pending_age_ms is None, "nor its pending age"


async def test_oldest_pending_only_where_pending_and_asked(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    for key in ("a", "b"):
        await fill(r, key, 5)
        await r.xgroup_create(key, "busy", "0")
        await r.xgroup_create(key, "idle", "$")
        await r.xreadgroup("busy", "c", {key: ">"}, count=2)
    ((oldest, _),) = await r.xrange("a", count=1)
    seconds, micros = await r.time()
    observed = await gateway.observe(["a", "b"], ages_for={"a"})
    busy_a, idle_a, busy_b = (
        observed.group("a", "busy"),
        observed.group("a", "idle"),
        observed.group("b", "busy"),
    )
    assert busy_a is not None and busy_a.oldest_pending_id == oldest
    assert busy_a.oldest_pending_measured
    assert (
        idle_a is not None and idle_a.oldest_pending_id is None and idle_a.oldest_pending_measured
    )
    assert busy_b is not None and busy_b.oldest_pending_id is None
    assert not busy_b.oldest_pending_measured
    server_ms = observed.streams["a"].server_time_ms
    assert server_ms is not None and 0 <= server_ms - (seconds * 1000 + micros // 1000) < 5000


async def test_missing_stream_wrong_type_and_missing_group_are_explicit(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await r.set("str", "x")
    await fill(r, "orders", 1)
    observed = await gateway.observe(["nope", "str", "orders"])
    assert observed.streams["nope"].status is StreamStatus.MISSING
    assert observed.streams["str"].status is StreamStatus.WRONG_TYPE
    assert observed.streams["orders"].status is StreamStatus.OK
    assert observed.group("orders", "nogroup") is None


async def test_details_give_first_and_last_entry(gateway: RedisGateway, r: aredis.Redis) -> None:
    ids = await fill(r, "orders", 4)
    stream = (await gateway.observe(["orders"], details_for={"orders"})).streams["orders"]
    assert (stream.first_entry_id, stream.last_entry_id) == (ids[0], ids[-1])
    assert stream.length == 4


async def test_many_streams_span_many_script_calls_and_stay_in_order(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(95):
        for _ in range(i % 7):
            pipe.xadd(f"s:{i}", {"x": 1})
        pipe.xgroup_create(f"s:{i}", "g", "0", mkstream=True)
    await pipe.execute()
    observed = await gateway.observe([f"s:{i}" for i in range(95)])
    for i in range(95):
        assert lag_of(observed, f"s:{i}", "g").value == i % 7


async def test_scripts_flushed_under_us_are_reloaded(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await fill(r, "orders", 2)
    await r.xgroup_create("orders", "g", "0")
    assert (await gateway.observe(["orders"])).group("orders", "g") is not None
    await r.script_flush()
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None and lag.value == 2


async def test_redis_down_is_unknown_not_zero_and_recovers(r: aredis.Redis) -> None:
    own = RedisServer(version="7.0").start()
    gateway = RedisGateway(Endpoint(url=own.url), connect_timeout=1.0, command_timeout=2.0)
    try:
        client = aredis.Redis.from_url(own.url)
        await client.xadd("orders", {"x": 1})
        await client.xgroup_create("orders", "g", "0")
        await client.aclose()
        assert (await gateway.observe(["orders"])).group("orders", "g") is not None
        own.stop()
        started = time.monotonic()
        observed = await gateway.observe(["orders"])
        assert time.monotonic() - started < 3
        assert observed.problem is EndpointProblem.UNREACHABLE
        assert observed.streams == {} and observed.group("orders", "g") is None
        assert own.url.split("//")[1] in (observed.message or "")
        own.start()  # a fresh server: empty, and without our scripts
        observed = await gateway.observe(["orders"])
        assert observed.problem is None
        assert observed.streams["orders"].status is StreamStatus.MISSING
    finally:
        await gateway.close()
        own.cleanup()
