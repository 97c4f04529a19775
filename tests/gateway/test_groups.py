"""Group lifecycle and key discovery against a real redis-server (7.0 and 8.2)."""

import asyncio

import pytest
import redis.asyncio as aredis
from tests.gateway.helpers import lag_of

from streamherd.gateway import GatewayError, GroupOutcome, RedisGateway, ScanState
from streamherd.observations import EndpointProblem, Exactness


async def fill(r: aredis.Redis, key: str, n: int) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(key, {"n": i})
    return list(await pipe.execute())


async def test_creates_at_dollar_with_mkstream_and_reads_only_new_entries(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ensured = await gateway.ensure_group("orders", "g", "$", create_stream=True)
    assert ensured.outcome is GroupOutcome.CREATED
    assert await r.exists("orders") == 1
    await fill(r, "orders", 3)
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None and lag.value == 3 and lag.exactness is Exactness.EXACT


async def test_dollar_on_an_existing_stream_starts_at_its_end(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await fill(r, "orders", 5)
    await gateway.ensure_group("orders", "g", "$", create_stream=True)
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None and lag.value == 0


async def test_dollar_on_an_existing_stream_keeps_a_valid_lag_as_entries_arrive(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """A plain XGROUP CREATE at $ on a stream of several entries leaves entries-read unset:
    Redis's lag is null from the next XADD until the group reads, and every poll would count
    the backlog entry by entry (bench-load: most of the Redis CPU of a new user's set-up)."""
    await fill(r, "orders", 5)
    ensured = await gateway.ensure_group("orders", "g", "$", create_stream=True)
    assert ensured.entries_read == 5
    await fill(r, "orders", 3)
    raw = {g["name"]: g for g in await r.xinfo_groups("orders")}
    assert raw["g"]["entries-read"] == 5 and raw["g"]["lag"] == 3, "Redis's own lag is valid"
    observed = await gateway.observe(["orders"])
    lag = lag_of(observed, "orders", "g")
    assert lag.value == 3 and lag.exactness is Exactness.EXACT


async def test_zero_reads_the_whole_stream(gateway: RedisGateway, r: aredis.Redis) -> None:
    await fill(r, "orders", 5)
    await gateway.ensure_group("orders", "g", "0", create_stream=True)
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None and state.pending == 0 and lag.value == 5


async def test_mid_stream_start_gets_a_valid_lag_through_entriesread(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await fill(r, "orders", 10)
    ensured = await gateway.ensure_group("orders", "g", ids[3], create_stream=True)
    assert ensured.entries_read == 4
    raw = {g["name"]: g for g in await r.xinfo_groups("orders")}
    assert raw["g"]["lag"] == 6, "Redis itself reports the lag: ENTRIESREAD made it valid"
    observed = await gateway.observe(["orders"])
    state, lag = observed.group("orders", "g"), lag_of(observed, "orders", "g")
    assert state is not None and lag.value == 6 and lag.exactness is Exactness.EXACT


async def test_existing_group_is_adopted_never_reset(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await fill(r, "orders", 10)
    await r.xgroup_create("orders", "g", "0")
    await r.xreadgroup("g", "c1", {"orders": ">"}, count=4)
    before = (await r.xinfo_groups("orders"))[0]
    ensured = await gateway.ensure_group("orders", "g", "0", create_stream=True)
    assert ensured.outcome is GroupOutcome.ADOPTED
    assert ensured.last_delivered_id == before["last-delivered-id"]
    after = (await r.xinfo_groups("orders"))[0]
    assert after == before


async def test_concurrent_creators_one_creates_the_other_adopts(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    results = await asyncio.gather(
        *(gateway.ensure_group("orders", "g", "$", create_stream=True) for _ in range(5))
    )
    assert sorted(e.outcome for e in results) == [GroupOutcome.ADOPTED] * 4 + [GroupOutcome.CREATED]


async def test_missing_stream_without_create_is_a_typed_error(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    with pytest.raises(GatewayError) as caught:
        await gateway.ensure_group("nope", "g", "$", create_stream=False)
    assert caught.value.problem is EndpointProblem.STREAM_MISSING
    assert await r.exists("nope") == 0


async def test_wrong_type_at_key_is_a_typed_error(gateway: RedisGateway, r: aredis.Redis) -> None:
    await r.set("orders", "not a stream")
    with pytest.raises(GatewayError) as caught:
        await gateway.ensure_group("orders", "g", "$", create_stream=True)
    assert caught.value.problem is EndpointProblem.WRONG_TYPE
    assert "is a string" in caught.value.message


async def test_destroy_group_counts_already_gone_as_done(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await gateway.ensure_group("orders", "g", "$", create_stream=True)
    assert await gateway.destroy_group("orders", "g") is True
    assert await gateway.destroy_group("orders", "g") is False
    assert await gateway.destroy_group("no-such-stream", "g") is False


async def test_delete_stream_refuses_other_types(gateway: RedisGateway, r: aredis.Redis) -> None:
    await fill(r, "orders", 1)
    await r.set("config", "x")
    assert await gateway.delete_stream("orders") is True
    assert await gateway.delete_stream("orders") is False
    with pytest.raises(GatewayError, match="not a stream"):
        await gateway.delete_stream("config")
    assert await r.exists("config") == 1


async def test_pattern_discovery_finds_only_matching_streams_incrementally(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(3000):
        pipe.xadd(f"conv:{i}", {"t": "hello"})
    for i in range(1500):
        pipe.hset(f"conv:meta:{i}", "k", "v")  # matches the glob, not a stream
        pipe.xadd(f"other:{i}", {"t": "x"})  # a stream, not matching
        pipe.set(f"conv-{i}", "x")
    await pipe.execute()

    state = ScanState.start("conv:*")
    calls = 0
    while not await gateway.scan_streams(state, budget=500):
        calls += 1
        assert calls < 1000
    assert calls > 5, "discovery is incremental: a small budget takes several calls"
    assert state.found == {f"conv:{i}" for i in range(3000)}

    # keys that disappear are dropped after the next full pass; new ones are added
    await r.delete("conv:0", "conv:1")
    await r.xadd("conv:new", {"t": "x"})
    while not await gateway.scan_streams(state, budget=100_000):
        pass
    assert "conv:0" not in state.found and "conv:new" in state.found
    assert len(state.found) == 2999

    results = await gateway.ensure_groups(sorted(state.found), "brain", "$", create_stream=False)
    assert all(not isinstance(x, GatewayError) for x in results)
    assert all(
        x.outcome is GroupOutcome.CREATED for x in results if not isinstance(x, GatewayError)
    )
    assert (await r.xinfo_groups("conv:2999"))[0]["name"] == "brain"
