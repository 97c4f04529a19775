"""Entries that are not what a consumer expects never break the janitor, retention, the
operator's poll or the SDK (issue 15, "Bad input"): binary field names and values (not UTF-8,
NUL bytes), empty names and values, one 10 MB value, 5,000 fields (more than one command can
copy: dead-lettered in parts), and fields named like streamherd's own, set by a producer.
Real redis-server; every check by entry ids and exact bytes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis
from e2e.cluster.processes import async_wait_until
from e2e.cluster.redis import RedisServer
from tests.gateway.conftest import gateway, r, server
from tests.gateway.helpers import lag_of
from tests.janitor.helpers import settings

from streamherd.api.consumergroup import RecoveryStrategy
from streamherd.consumer import Consumer, Entry, StreamClient
from streamherd.controller import deadletters as dlc
from streamherd.decisions.deadletter import Selection
from streamherd.fields import DELIVERIES_FIELD, ENTRY_FIELDS_MAX, GROUP_FIELD, ORIGIN_ID_FIELD
from streamherd.gateway import RedisGateway
from streamherd.gateway.recovery import Strategy, recover
from streamherd.gateway.retention import acked_available, retain
from streamherd.observations import Exactness, ManagedGroup, Reading, RetentionRules

__all__ = ["gateway", "r", "server"]  # the gateway suite's fixtures: Redis 7.0, 8.2, Valkey 9.1

KEY, DLQ = "hostile", "hostile:dlq"
HUGE = 10 * 1024 * 1024
WIDE = 5_000

Fields = dict[bytes, bytes]

client_side = pytest.mark.e2e_variants("redis-8.2", "valkey-9.1")
"""What the SDK does with an entry is the client's: one server in the suite, all under e2e."""


def hostile_entries() -> dict[str, Fields]:
    """The kinds of entry, by name. (The 10 MB one is built once per test that needs it.)"""
    return {
        "binary": {b"\xff\x00na\x80me": b"\x80\x00val\xc3ue\x00", b"ok": b"\xfe\xff"},
        "nul": {b"\x00": b"\x00\x00"},
        "empty": {b"": b"", b"e": b""},
        "wide": {f"f{i}".encode(): f"v{i}".encode() for i in range(WIDE)},
        "huge": {b"blob": b"\xab" * HUGE},
        # A producer's own field named like ours, alone: not a re-queued copy (no origin id).
        "fake-deliveries": {DELIVERIES_FIELD.encode(): b"999", b"body": b"x"},
        "negative-deliveries": {DELIVERIES_FIELD.encode(): b"-1000", b"body": b"y"},
    }


@pytest.fixture
async def raw(server: RedisServer, r: aredis.Redis) -> AsyncIterator[aredis.Redis]:
    """A client that neither decodes nor encodes text: what a binary producer uses. (``r``
    empties the server first.)"""
    client = aredis.Redis.from_url(server.url, socket_timeout=60)
    yield client
    await client.aclose()


async def produce(raw: aredis.Redis, kinds: dict[str, Fields]) -> dict[str, str]:
    """Each kind between two plain entries; returns kind -> id (plain ones: "plain-<n>")."""
    ids: dict[str, str] = {}
    n = 0
    for name, fields in kinds.items():
        ids[f"plain-{n}"] = (await raw.xadd(KEY, {b"n": str(n).encode()})).decode()
        n += 1
        ids[name] = (await raw.xadd(KEY, fields)).decode()  # type: ignore[arg-type]
    ids[f"plain-{n}"] = (await raw.xadd(KEY, {b"n": str(n).encode()})).decode()
    return ids


async def stream_entries(
    raw: aredis.Redis, key: str
) -> list[tuple[str, list[tuple[bytes, bytes]]]]:
    """Every entry, its fields in order."""
    return [(i.decode(), list(f.items())) for i, f in await raw.xrange(key)]


def header(
    fields: list[tuple[bytes, bytes]], n: int
) -> tuple[dict[str, str], list[tuple[bytes, bytes]]]:
    """The first ``n`` fields (streamherd's header) as text, and the rest as they are."""
    return {k.decode(): v.decode() for k, v in fields[:n]}, fields[n:]


# ---------------------------------------------------------------------- the janitor


async def test_the_janitor_requeues_odd_entries_byte_for_byte_and_dead_letters_wide_ones_in_parts(
    gateway: RedisGateway, raw: aredis.Redis
) -> None:
    kinds = hostile_entries()
    ids = await produce(raw, kinds)
    await raw.xgroup_create(KEY, "g", "0")
    delivered = await raw.xreadgroup("g", "dead", {KEY: ">"}, count=1000)
    assert len(delivered[0][1]) == len(ids)

    batch = await recover(gateway, KEY, "g", settings(), dead_letter=DLQ, consumer="dead")

    assert batch.examined == len(ids) and batch.acked == len(ids) and batch.failed == 0
    assert (batch.requeued, batch.dead_lettered, batch.oversized) == (len(ids) - 1, 1, 1)
    assert await raw.xpending(KEY, "g") == {"pending": 0, "min": None, "max": None, "consumers": []}
    by_id = {i: name for name, i in ids.items()}
    originals = {i: f for i, f in (await stream_entries(raw, KEY)) if i in by_id}
    copies = [(i, f) for i, f in await stream_entries(raw, KEY) if i not in by_id]
    # One copy of every entry but the wide one, each once, its own fields byte for byte.
    origins = []
    for _, fields in copies:
        head, own = header(fields, 3)
        assert list(head) == [ORIGIN_ID_FIELD, DELIVERIES_FIELD, GROUP_FIELD]
        assert head[GROUP_FIELD] == "g"
        # A producer's "streamherd-deliveries" on an entry that is no copy counts for nothing:
        # this was its first delivery, whatever the field said.
        assert head[DELIVERIES_FIELD] == "1", by_id[head[ORIGIN_ID_FIELD]]
        origin = head[ORIGIN_ID_FIELD]
        origins.append(origin)
        expected = [(k, v) for k, v in originals[origin] if k != DELIVERIES_FIELD.encode()]
        assert own == expected, by_id[origin]
    assert sorted(origins) == sorted(i for name, i in ids.items() if name != "wide")
    # The wide entry: dead-lettered in ceil(5000 / 3000) parts, its fields in order, once.
    records = await stream_entries(raw, DLQ)
    parts = -(-WIDE // ENTRY_FIELDS_MAX)
    assert len(records) == parts
    rebuilt: list[tuple[bytes, bytes]] = []
    for n, (_, fields) in enumerate(records, start=1):
        head, own = header(fields, 6)
        assert head["streamherd-origin-id"] == ids["wide"]
        assert head["streamherd-part"] == f"{n}/{parts}"
        assert head["streamherd-consumer"] == "dead" and head["streamherd-group"] == "g"
        rebuilt += own
    assert rebuilt == list(kinds["wide"].items())


async def test_the_janitor_counts_deliveries_of_copies_only(
    gateway: RedisGateway, raw: aredis.Redis
) -> None:
    """A producer's "streamherd-deliveries" (without an origin id: no copy) never makes an
    entry poison early, nor, negative, keeps one from becoming poison: stale at
    maxDeliveries it is dead-lettered like any other."""
    kinds = hostile_entries()
    fake = {k: kinds[k] for k in ("fake-deliveries", "negative-deliveries")}
    ids = await produce(raw, fake)
    await raw.xgroup_create(KEY, "g", "0")
    for _ in range(2):  # delivered twice (a consumer re-reading its history)
        await raw.xreadgroup("g", "c1", {KEY: "0" if _ else ">"}, count=100)
    batch = await recover(
        gateway, KEY, "g", settings(max_deliveries=2), dead_letter=DLQ, min_idle_ms=0
    )
    assert batch.dead_lettered == len(ids) and batch.requeued == 0
    records = await stream_entries(raw, DLQ)
    assert sorted(dict(header(f, 5)[0])["streamherd-origin-id"] for _, f in records) == sorted(
        ids.values()
    )
    assert {header(f, 5)[0]["streamherd-deliveries"] for _, f in records} == {"2"}


# ---------------------------------------------------------------------- retention, the poll


async def test_retention_trims_exactly_around_odd_entries_and_the_poll_reports_lag(
    gateway: RedisGateway, raw: aredis.Redis
) -> None:
    ids = await produce(raw, hostile_entries())
    order = list(ids.values())
    await raw.xgroup_create(KEY, "g", "0")
    await raw.xreadgroup("g", "c1", {KEY: ">"}, count=3)
    # XDEL behind the group's position makes XINFO's lag null: observe.lua counts, reading
    # past the huge and the wide entries.
    await raw.xdel(KEY, order[-1])
    observed = await gateway.observe([KEY])
    assert lag_of(observed, KEY, "g") == Reading.exact(len(order) - 4)
    kept = 6
    (step,) = await retain(
        gateway, [KEY], RetentionRules(max_length=kept, approximate=False, respect_groups=False), ()
    )
    assert step.problem is None and step.trimmed == len(order) - 1 - kept
    remaining = [i for i, _ in await stream_entries(raw, KEY)]
    assert remaining == order[-1 - kept : -1]
    assert await raw.xlen(KEY) == kept


async def test_retention_holds_at_an_odd_pending_entry_then_deletes_the_ended_call(
    gateway: RedisGateway, raw: aredis.Redis
) -> None:
    """A group's oldest pending entry (the 5,000-field one) is what maxAge keeps; once
    it is acknowledged, the ended call (idle two minutes) is deleted."""
    start_ms = int(time.time() * 1000) - 120_000
    key = "conv:odd"
    ids = []
    for n, fields in enumerate(hostile_entries().values()):
        added = await raw.xadd(key, fields, id=f"{start_ms + n}-0")  # type: ignore[arg-type]
        ids.append(added.decode())
    await raw.xgroup_create(key, "g", "0")
    await raw.xreadgroup("g", "c1", {key: ">"}, count=100)
    wide = ids[list(hostile_entries()).index("wide")]
    await raw.xack(key, "g", *(i for i in ids if i != wide))
    rules = RetentionRules(max_age_ms=60_000, approximate=False, delete_idle_after_ms=60_000)
    managed = [ManagedGroup("g", "$")]
    (step,) = await retain(gateway, [key], rules, managed)
    assert step.problem is None and not step.deleted
    # 8.2's ACKED trims every acknowledged entry the policy would trim; 7.x stops at the floor.
    kept = [wide] if acked_available(gateway) else ids[ids.index(wide) :]
    assert [i for i, _ in await stream_entries(raw, key)] == kept
    await raw.xack(key, "g", wide)
    (step,) = await retain(gateway, [key], rules, managed)
    assert step.deleted and await raw.exists(key) == 0


async def test_claim_moves_odd_entries_by_id_the_wide_one_too(
    gateway: RedisGateway, raw: aredis.Redis
) -> None:
    ids = await produce(raw, hostile_entries())
    await raw.xgroup_create(KEY, "g", "0")
    await raw.xreadgroup("g", "dead", {KEY: ">"}, count=1000)
    batch = await recover(
        gateway,
        KEY,
        "g",
        settings(Strategy.CLAIM),
        dead_letter=DLQ,
        consumer="dead",
        targets=["live"],
    )
    assert (batch.claimed, batch.dead_lettered, batch.acked) == (len(ids), 0, 0)
    rows = await raw.xpending_range(KEY, "g", "-", "+", 1000)
    assert sorted(r["message_id"].decode() for r in rows) == sorted(ids.values())
    assert {r["consumer"] for r in rows} == {b"live"}
    assert await raw.xlen(KEY) == len(ids) and await raw.exists(DLQ) == 0


async def test_the_polls_count_of_a_null_lag_stops_at_a_byte_budget_over_huge_entries(
    gateway: RedisGateway, raw: aredis.Redis
) -> None:
    """Counting a null lag copies whole entries into the script (XRANGE has no ids-only
    form), while Redis serves no one else: 100 entries of 1 MB held it for ~1 s and 100 MB
    per poll. The count stops at a byte budget (a lower bound: unknown is not zero); entries
    of 1 KB are still counted exactly as far as the entry budget goes."""
    for key, size, n in (("big", 1024 * 1024, 13), ("small", 1024, 101)):  # 12 MB, 100 KB
        await raw.xgroup_create(key, "g", "0", mkstream=True)
        pipe = raw.pipeline(transaction=False)
        for _ in range(n):
            pipe.xadd(key, {b"v": b"\xab" * size})
        last = (await pipe.execute())[-1]
        await raw.xdel(key, last)  # a tombstone after the group: XINFO's lag is null
    big = lag_of(await gateway.observe(["big"]), "big", "g")
    assert big.exactness is Exactness.LOWER_BOUND and 1 <= big.value < 12, big
    assert lag_of(await gateway.observe(["small"]), "small", "g") == Reading.exact(100)


# ---------------------------------------------------------------------- the SDK


@client_side
@pytest.mark.parametrize("via", ["from_url", "settings"])
async def test_the_sdk_hands_odd_entries_to_the_handler_and_their_bytes_survive(
    server: RedisServer, raw: aredis.Redis, via: str
) -> None:
    kinds = hostile_entries()
    del kinds["huge"]  # below, once
    ids = await produce(raw, kinds)
    await raw.xgroup_create(KEY, "g", "0")
    if via == "from_url":
        client = StreamClient.from_url(server.url, group="g", consumer="c1")
    else:
        from streamherd.consumer import Settings

        client = StreamClient.from_settings(
            Settings(redis_url=server.url, group="g", consumer="c1", stream=KEY)
        )
    seen: dict[str, Entry] = {}

    async def handle(entry: Entry) -> None:
        seen[entry.id] = entry

    consumer = Consumer(client, stream=KEY, handler=handle, history_interval=0.2)
    task = asyncio.create_task(consumer.run())
    try:
        await async_wait_until(lambda: len(seen) >= len(ids) or task.done(), 30)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
        await client.close()
    assert set(seen) == set(ids.values())
    for name, fields in kinds.items():
        got = seen[ids[name]]
        as_bytes = {
            k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape")
            for k, v in got.fields.items()
        }
        ours = {k: v for k, v in fields.items() if not k.startswith(b"streamherd-")}
        assert as_bytes == ours, name
        assert got.deliveries == 1 and got.origin_id == got.id, name
    assert consumer.stats.acked == len(ids) and consumer.stats.failed == 0
    assert await raw.xpending(KEY, "g") == {"pending": 0, "min": None, "max": None, "consumers": []}


@client_side
async def test_the_sdk_reads_a_10_mb_value(server: RedisServer, raw: aredis.Redis) -> None:
    value = bytes(range(256)) * (HUGE // 256)
    await raw.xgroup_create(KEY, "g", "0", mkstream=True)
    entry_id = (await raw.xadd(KEY, {b"blob": value})).decode()
    async with StreamClient.from_url(server.url, group="g", consumer="c1") as client:
        (entry,) = await client.read_group([KEY])
        assert entry.id == entry_id
        assert entry.bytes("blob") == value
        assert await client.ack(KEY, entry.id) == 1


@client_side
async def test_a_client_that_cannot_decode_every_entry_is_refused_at_once(
    server: RedisServer, r: aredis.Redis
) -> None:
    """A consumer built on a client of your own: one that does not decode text, or decodes
    strictly (a binary entry would fail the whole read, every time), is refused with what to
    pass; a publisher may use any client."""
    for options in ({"decode_responses": False}, {"decode_responses": True}):
        redis = aredis.Redis.from_url(server.url, **options)
        client = StreamClient(redis, group="g", consumer="c1")
        with pytest.raises(ValueError, match="surrogateescape"):
            Consumer(client, stream=KEY, handler=print)
        with pytest.raises(ValueError, match="surrogateescape"):
            await client.read_group([KEY])
        assert await client.publish(KEY, {"a": "b"})
        await redis.aclose()


# ---------------------------------------------------------------------- fields named like ours


async def forged(raw: aredis.Redis) -> dict[str, str]:
    """Entries whose producer wrote streamherd's header fields itself (forwarding a copy's
    raw fields, say), around two plain ones; kind -> id."""
    plain = (await raw.xadd(KEY, {b"n": b"0"})).decode()
    o, d, g = (f.encode() for f in (ORIGIN_ID_FIELD, DELIVERIES_FIELD, GROUP_FIELD))
    kinds = {
        "plain": plain,
        "for-other": {o: plain.encode(), d: b"1", g: b"other", b"n": b"1"},
        "for-g": {o: plain.encode(), d: b"7", g: b"g", b"n": b"2"},
        "odd-count": {o: plain.encode(), d: b"1e400", b"n": b"3"},
        "last": {b"n": b"4"},
    }
    return {
        name: fields if isinstance(fields, str) else (await raw.xadd(KEY, fields)).decode()  # type: ignore[arg-type]
        for name, fields in kinds.items()
    }


async def test_a_forged_header_affects_only_the_entry_that_carries_it_in_the_janitor(
    gateway: RedisGateway, raw: aredis.Redis
) -> None:
    """The header is what a copy is known by (no producer can be told apart): an entry that
    carries one is taken at its word, and nothing else is: the entry its origin id names is
    untouched, every other entry recovered once."""
    ids = await forged(raw)
    await raw.xgroup_create(KEY, "g", "0")
    await raw.xreadgroup("g", "dead", {KEY: ">"}, count=100)
    batch = await recover(
        gateway, KEY, "g", settings(max_deliveries=5), dead_letter=DLQ, consumer="dead"
    )
    assert (batch.requeued, batch.foreign, batch.dead_lettered, batch.acked) == (3, 1, 1, 5)
    copies = {
        header(f, 3)[0][ORIGIN_ID_FIELD]: header(f, 3)[0]
        for i, f in await stream_entries(raw, KEY)
        if i not in ids.values()
    }
    # plain and last are copied under their own ids; "odd-count" names plain as its origin.
    assert set(copies) == {ids["plain"], ids["last"]}
    copied = [i for i, _ in await stream_entries(raw, KEY) if i not in ids.values()]
    assert len(copied) == 3
    (record,) = await stream_entries(raw, DLQ)
    assert header(record[1], 5)[0]["streamherd-deliveries"] == "8"  # 7 carried + 1
    assert await raw.xpending(KEY, "g") == {"pending": 0, "min": None, "max": None, "consumers": []}


@client_side
async def test_a_forged_header_affects_only_the_entry_that_carries_it_in_the_sdk(
    server: RedisServer, raw: aredis.Redis
) -> None:
    ids = await forged(raw)
    await raw.xgroup_create(KEY, "g", "0")
    seen: dict[str, Entry] = {}

    async def handle(entry: Entry) -> None:
        seen[entry.id] = entry

    client = StreamClient.from_url(server.url, group="g", consumer="c1")
    consumer = Consumer(client, stream=KEY, handler=handle, history_interval=0.2)
    task = asyncio.create_task(consumer.run())
    try:
        await async_wait_until(lambda: consumer.stats.acked + consumer.stats.foreign_acked >= 5, 30)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
        await client.close()
    assert set(seen) == {ids[k] for k in ("plain", "for-g", "odd-count", "last")}
    assert consumer.stats.foreign_acked == 1
    assert [(seen[ids[k]].origin_id, seen[ids[k]].deliveries) for k in ("for-g", "odd-count")] == [
        (ids["plain"], 8),
        (ids["plain"], 1),
    ]
    assert seen[ids["plain"]].fields == {"n": "0"} and seen[ids["for-g"]].fields == {"n": "2"}
    assert await raw.xpending(KEY, "g") == {"pending": 0, "min": None, "max": None, "consumers": []}


@client_side
async def test_publish_refuses_field_names_of_ours(server: RedisServer, r: aredis.Redis) -> None:
    async with StreamClient.from_url(server.url) as client:
        for name in (GROUP_FIELD, ORIGIN_ID_FIELD.encode()):
            with pytest.raises(ValueError, match="streamherd-"):
                await client.publish(KEY, {name: "x", "n": "1"})  # type: ignore[dict-item]
        assert await r.exists(KEY) == 0


# ---------------------------------------------------------------------- streamherd dlq


async def test_streamherd_dlq_shows_and_replays_a_binary_entry_byte_for_byte(
    gateway: RedisGateway, raw: aredis.Redis
) -> None:
    """A binary entry that was poison can be listed, shown (undecodable bytes and control
    characters escaped, one line per record) and replayed: its copy is the same bytes."""
    fields = hostile_entries()["binary"] | {b"line": b"a\nb"}
    await raw.xgroup_create(KEY, "g", "0", mkstream=True)
    origin = (await raw.xadd(KEY, fields)).decode()  # type: ignore[arg-type]
    await raw.xreadgroup("g", "c1", {KEY: ">"})
    await raw.xreadgroup("g", "c1", {KEY: "0"})
    batch = await recover(
        gateway, KEY, "g", settings(max_deliveries=1), dead_letter=DLQ, min_idle_ms=0
    )
    assert batch.dead_lettered == 1
    target = dlc.Target(
        gateway=gateway,
        name="test",
        key=KEY,
        pattern=None,
        cluster=False,
        dead_letters=set(),
        strategies={},
        default=RecoveryStrategy.REQUEUE,
    )
    assert "1" in await dlc.list_command(target, as_json=False)
    text = await dlc.show_command(target, Selection(), limit=10, as_json=False)
    assert origin in text and "\\xff\\x00na\\x80me=" in text and "a\\nb" in text
    assert all(line.isprintable() for line in text.splitlines())
    (shown,) = json.loads(await dlc.show_command(target, Selection(), limit=10, as_json=True))
    assert shown["origin_id"] == origin
    code, out = await dlc.replay_command(
        target, Selection(groups=frozenset({"g"})), dry_run=False, as_json=False
    )
    assert code == 0, out
    (copy,) = [f for i, f in await stream_entries(raw, KEY) if i != origin]
    assert header(copy, 3)[0][ORIGIN_ID_FIELD] == origin
    assert header(copy, 3)[1] == list(fields.items())
