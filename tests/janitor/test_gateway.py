"""recover.lua and remove_consumers.lua on real redis-server 7.0 and 8.2: each trap of the
"Claiming" and "Dead-lettering" notes (shared/notes/redis-streams.md) is a test here."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aredis
from tests.janitor.helpers import deliver, idle, pel, seed, settings

from streamherd.decisions.recovery import next_offset
from streamherd.fields import (
    CONSUMER_FIELD,
    DELIVERIES_FIELD,
    GROUP_FIELD,
    ORIGIN_ID_FIELD,
    STREAM_FIELD,
)
from streamherd.gateway import GatewayError, RedisGateway
from streamherd.gateway.recovery import (
    Batch,
    Strategy,
    consumers,
    recover,
    remove_consumers,
)
from streamherd.observations import EndpointProblem

KEY, DLQ = "orders", "orders:dlq"


async def drain(
    gateway: RedisGateway, targets: Sequence[str] = (), offset: int = 0, **options: Any
) -> list[Batch]:
    """recover() batch after batch until the end of the PEL, moving the round-robin offset
    on as the janitor's pass does."""
    batches, start = [], "-"
    while True:
        batch = await recover(
            gateway, KEY, "g", start=start, targets=targets, offset=offset, **options
        )
        batches.append(batch)
        offset = next_offset(offset, batch.claimed, len(targets))
        if batch.next_start is None:
            return batches
        start = batch.next_start


async def test_requeue_copies_stale_entries_to_the_tail_and_acks_only_them(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await seed(r, KEY, 10)
    stale = await deliver(r, KEY, "crashed", 6)
    await idle(0.25)
    fresh = await deliver(r, KEY, "busy", 4)

    batch = await recover(gateway, KEY, "g", settings(), dead_letter=DLQ, min_idle_ms=200)

    assert (batch.examined, batch.requeued, batch.claimed, batch.acked) == (10, 6, 0, 6)
    assert batch.next_start is None, "fewer than a batch: the end of the PEL"
    assert set(await pel(r, KEY)) == set(fresh), "fresh entries are left where they are"
    copies = (await r.xrange(KEY))[10:]
    assert [c[1]["msg"] for c in copies] == [str(i) for i in range(6)], "in order, at the tail"
    for (copy_id, fields), origin in zip(copies, stale, strict=True):
        assert copy_id > ids[-1]
        assert fields[ORIGIN_ID_FIELD] == origin and fields[DELIVERIES_FIELD] == "1"
        assert fields[GROUP_FIELD] == "g", "a copy names the group it is work for"
        assert fields["body"] == f"order {fields['msg']}"
    # A plain ">" reader gets exactly the copies, nothing else.
    assert len(await deliver(r, KEY, "fresh-reader", 100)) == 6
    assert await r.xlen(DLQ) == 0


async def test_delivery_counts_carry_across_requeues_until_dead_lettered(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """max 3: delivered, re-queued (1), delivered, re-queued (2), delivered: dead-lettered
    with all three deliveries, the first id, and who held it last."""
    (first,) = await seed(r, KEY, 1, poison="1")
    carried = []
    for attempt in range(1, 4):
        await deliver(r, KEY, f"worker-{attempt}", 1)
        await idle(0.12)
        batch = await recover(
            gateway, KEY, "g", settings(max_deliveries=3), dead_letter=DLQ, min_idle_ms=100
        )
        if attempt < 3:
            assert (batch.requeued, batch.dead_lettered) == (1, 0)
            copy = (await r.xrange(KEY))[-1][1]
            carried.append(copy[DELIVERIES_FIELD])
            assert copy[ORIGIN_ID_FIELD] == first, "the origin survives every re-queue"
        else:
            assert (batch.requeued, batch.dead_lettered, batch.acked) == (0, 1, 1)
    assert carried == ["1", "2"]
    ((_, record),) = await r.xrange(DLQ)
    assert record == {
        ORIGIN_ID_FIELD: first,
        STREAM_FIELD: KEY,
        GROUP_FIELD: "g",
        CONSUMER_FIELD: "worker-3",
        DELIVERIES_FIELD: "3",
        "msg": "0",
        "body": "order 0",
        "poison": "1",
    }
    assert await pel(r, KEY) == {}
    assert await r.xlen(KEY) == 3, "no copy after the dead-letter"


async def test_over_delivered_entries_are_dead_lettered_even_while_never_idle(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """A consumer that re-reads its own history redelivers a failing entry again and again:
    it never goes idle, but its delivery count passes the limit."""
    ids = await seed(r, KEY, 2)
    await deliver(r, KEY, "history-reader", 2)
    for _ in range(3):  # history reads: each increments the delivery counter
        await r.xreadgroup("g", "history-reader", {KEY: "0"}, count=1)
    assert await pel(r, KEY) == {ids[0]: ("history-reader", 4), ids[1]: ("history-reader", 1)}

    batch = await recover(
        gateway, KEY, "g", settings(max_deliveries=3), dead_letter=DLQ, min_idle_ms=60_000
    )

    assert (batch.dead_lettered, batch.requeued) == (1, 0)
    assert [f[ORIGIN_ID_FIELD] for _, f in await r.xrange(DLQ)] == [ids[0]]
    assert await pel(r, KEY) == {ids[1]: ("history-reader", 1)}, "not stale, not poison: left"


async def test_exactly_max_deliveries_waits_until_stale(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """Its max-th delivery may still be in progress: dead-lettered only once it is stale."""
    (entry,) = await seed(r, KEY, 1)
    await deliver(r, KEY, "w", 1)
    await r.xreadgroup("g", "w", {KEY: "0"})
    await r.xreadgroup("g", "w", {KEY: "0"})
    assert (await pel(r, KEY))[entry] == ("w", 3)
    busy = await recover(
        gateway, KEY, "g", settings(max_deliveries=3), dead_letter=DLQ, min_idle_ms=100
    )
    assert busy.dead_lettered == 0 and entry in await pel(r, KEY)
    await idle(0.12)
    done = await recover(
        gateway, KEY, "g", settings(max_deliveries=3), dead_letter=DLQ, min_idle_ms=100
    )
    assert done.dead_lettered == 1 and await pel(r, KEY) == {}


async def test_a_dead_consumers_entries_are_recovered_at_once(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await seed(r, KEY, 8)
    dead = await deliver(r, KEY, "web-abc-x1y2z", 5)
    alive = await deliver(r, KEY, "web-abc-a1b2c", 3)

    batch = await recover(gateway, KEY, "g", settings(), dead_letter=DLQ, consumer="web-abc-x1y2z")

    assert (batch.examined, batch.requeued) == (5, 5), "no min idle for a dead consumer"
    assert set(await pel(r, KEY)) == set(alive), "only that consumer's entries"
    assert [f[ORIGIN_ID_FIELD] for _, f in (await r.xrange(KEY))[8:]] == dead


async def test_claim_round_robin_keeps_ids_and_delivery_counts(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await seed(r, KEY, 10)
    stranded = await deliver(r, KEY, "dead", 10)
    targets = ["t1", "t2", "t3"]

    batches = await drain(
        gateway,
        settings=settings(Strategy.CLAIM, batch_size=4),
        dead_letter=DLQ,
        consumer="dead",
        targets=targets,
        offset=2,
    )

    assert [b.claimed for b in batches] == [4, 4, 2]
    owners = await pel(r, KEY)
    assert set(owners) == set(stranded), "claimed, not copied: the ids stay"
    assert await r.xlen(KEY) == 10
    assert [owners[i][0] for i in stranded] == ["t3", "t1", "t2"] * 3 + ["t3"], "round-robin"
    assert {count for _, count in owners.values()} == {1}, "claiming is not a delivery"
    # A history reader now gets its share, and that read counts as a delivery.
    mine = await r.xreadgroup("g", "t3", {KEY: "0"})
    assert len(mine[0][1]) == 4
    assert {(await pel(r, KEY))[i][1] for i, _ in mine[0][1]} == {2}


async def test_claim_hands_what_goes_stale_in_a_live_consumers_pel_to_another_live_one(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """A live consumer that holds an entry past min idle is not reading it (stuck, or slow):
    another live consumer gets it. Claim never copies into the shared stream."""
    await seed(r, KEY, 4)
    held_by_live = await deliver(r, KEY, "t1", 2)
    held_by_gone = await deliver(r, KEY, "somebody-else", 2)
    await idle(0.12)

    batch = await recover(
        gateway,
        KEY,
        "g",
        settings(Strategy.CLAIM),
        dead_letter=DLQ,
        min_idle_ms=100,
        targets=["t1", "t2"],
    )

    assert (batch.requeued, batch.claimed, batch.kept) == (0, 4, 0)
    assert await r.xlen(KEY) == 4, "nothing copied"
    owners = await pel(r, KEY)
    assert {owners[i][0] for i in held_by_live} == {"t2"}, "never back to the stuck owner"
    assert {owners[i][0] for i in held_by_gone} <= {"t1", "t2"}


async def test_claim_keeps_entries_pending_without_another_live_consumer(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """No live consumer (or only the owner): the entries stay in the group's PEL - pending
    keeps the backlog above zero, so the group is woken and a new pod gets them claimed."""
    await seed(r, KEY, 5)
    stranded = await deliver(r, KEY, "dead", 3)
    own = await deliver(r, KEY, "t1", 2)
    await idle(0.12)
    nobody = await recover(
        gateway, KEY, "g", settings(Strategy.CLAIM), dead_letter=DLQ, consumer="dead"
    )
    only_owner = await recover(
        gateway,
        KEY,
        "g",
        settings(Strategy.CLAIM),
        dead_letter=DLQ,
        min_idle_ms=100,
        targets=["t1"],
    )
    assert (nobody.requeued, nobody.claimed, nobody.kept) == (0, 0, 3)
    assert (only_owner.claimed, only_owner.kept) == (3, 2), "the dead one's go to t1; t1's stay"
    assert await r.xlen(KEY) == 5, "nothing copied"
    owners = await pel(r, KEY)
    assert {owners[i][0] for i in stranded + own} == {"t1"}


async def test_pending_entries_whose_stream_entry_is_gone_are_dropped(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await seed(r, KEY, 10)
    await deliver(r, KEY, "dead", 10)
    await r.xtrim(KEY, maxlen=6, approximate=False)  # the 4 oldest go; their PEL entries stay
    await r.xdel(KEY, ids[7])
    assert len(await pel(r, KEY)) == 10

    batch = await recover(gateway, KEY, "g", settings(), dead_letter=DLQ, consumer="dead")

    assert (batch.dropped, batch.requeued, batch.acked) == (5, 5, 10)
    assert await pel(r, KEY) == {}
    copies = [f[ORIGIN_ID_FIELD] for _, f in (await r.xrange(KEY))[5:]]
    assert copies == [ids[4], ids[5], ids[6], ids[8], ids[9]]


async def test_concurrent_acks_and_janitors_never_duplicate_a_dead_letter(
    gateway: RedisGateway, r: aredis.Redis, server: object
) -> None:
    """Four janitors and a consumer acking one entry at a time, all at once: every entry
    ends up either acked by the consumer or dead-lettered, exactly once."""
    ids = await seed(r, KEY, 400)
    await deliver(r, KEY, "failing", 400)
    await idle(0.12)
    others = [RedisGateway(gateway.endpoint) for _ in range(3)]
    consumer_acked: set[str] = set()
    batches: list[Batch] = []

    async def janitor(gw: RedisGateway) -> None:
        start = "-"
        while True:
            batch = await recover(
                gw,
                KEY,
                "g",
                settings(max_deliveries=1, batch_size=7),
                dead_letter=DLQ,
                start=start,
                min_idle_ms=100,
            )
            batches.append(batch)
            if batch.next_start is None:
                return
            start = batch.next_start
            await asyncio.sleep(0)

    async def consumer() -> None:
        for entry in random.Random(7).sample(ids, 200):
            if await r.xack(KEY, "g", entry):
                consumer_acked.add(entry)

    try:
        await asyncio.gather(consumer(), *(janitor(gw) for gw in [gateway, *others]))
    finally:
        for gw in others:
            await gw.close()

    records = [f[ORIGIN_ID_FIELD] for _, f in await r.xrange(DLQ)]
    assert len(records) == len(set(records)), "no entry dead-lettered twice"
    assert not set(records) & consumer_acked, "nothing the consumer acked was dead-lettered"
    assert set(records) | consumer_acked == set(ids)
    assert 0 < len(consumer_acked) < 200, "the acks really raced the janitors"
    assert sum(b.acked for b in batches) == len(records) == sum(b.dead_lettered for b in batches)
    assert await pel(r, KEY) == {}


async def test_poison_is_held_without_a_dead_letter_stream(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await seed(r, KEY, 3)
    await deliver(r, KEY, "dead", 3)
    await r.xreadgroup("g", "dead", {KEY: "0"}, count=1)  # the first one: 2 deliveries
    batch = await recover(
        gateway, KEY, "g", settings(max_deliveries=2), dead_letter=None, consumer="dead"
    )
    assert (batch.held, batch.requeued, batch.dead_lettered) == (1, 2, 0)
    assert len(await pel(r, KEY)) == 1, "kept pending: not lost, not looping through copies"


async def test_stale_scan_is_bounded_and_resumes_after_its_cursor(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await seed(r, KEY, 25)
    await deliver(r, KEY, "a", 25)
    await idle(0.12)
    batches = await drain(
        gateway, settings=settings(batch_size=10), dead_letter=DLQ, min_idle_ms=100
    )
    assert [(b.examined, b.requeued) for b in batches] == [(10, 10), (10, 10), (5, 5)]
    assert batches[0].next_start is not None and batches[0].next_start.startswith("(")
    assert await pel(r, KEY) == {}


async def test_dead_letter_stream_is_capped(gateway: RedisGateway, r: aredis.Redis) -> None:
    await seed(r, KEY, 600)
    await deliver(r, KEY, "dead", 600)
    await drain(
        gateway,
        settings=settings(max_deliveries=1, dead_letter_cap=50),
        dead_letter=DLQ,
        consumer="dead",
    )
    length = await r.xlen(DLQ)
    # MAXLEN ~ removes whole radix-tree nodes (stream-node-max-entries, 100 by default).
    assert 50 <= length <= 150, length


async def test_consumers_are_removed_only_with_an_empty_pel_and_idle_long_enough(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await seed(r, KEY, 3)
    await deliver(r, KEY, "busy", 2)
    await deliver(r, KEY, "recent", 1)
    await r.xack(KEY, "g", *(await pel(r, KEY)))  # all acked: only "busy" gets more work
    await seed(r, KEY, 1, start=3)
    await deliver(r, KEY, "busy", 1)

    removed = await remove_consumers(
        gateway,
        {KEY: [("busy", 0), ("recent", 60_000), ("gone", 0)], "no-such-stream": [("x", 0)]},
        "g",
    )

    assert removed == {KEY: [], "no-such-stream": []}
    removed = await remove_consumers(gateway, {KEY: [("recent", 0)]}, "g")
    assert removed == {KEY: ["recent"]}
    names = {c.name for c in (await consumers(gateway, [KEY], "g"))[KEY]}  # type: ignore[union-attr]
    assert {"busy"} <= names and "recent" not in names


async def test_consumers_of_a_missing_group_or_stream_are_errors_per_key(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await seed(r, KEY, 2)
    await deliver(r, KEY, "a", 2)
    found = await consumers(gateway, [KEY, "nothing-here"], "g")
    assert [(c.name, c.pending) for c in found[KEY]] == [("a", 2)]  # type: ignore[union-attr]
    assert isinstance(found["nothing-here"], GatewayError)
    missing_group = await consumers(gateway, [KEY], "nope")
    assert isinstance(missing_group[KEY], GatewayError)
    assert missing_group[KEY].problem is EndpointProblem.GROUP_MISSING


async def test_scripts_are_loaded_again_after_a_script_flush(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await seed(r, KEY, 2)
    await deliver(r, KEY, "dead", 2)
    await gateway.connect()
    await r.script_flush()
    batch = await recover(gateway, KEY, "g", settings(), dead_letter=DLQ, consumer="dead")
    assert batch.requeued == 2
    await r.script_flush()
    assert await remove_consumers(gateway, {KEY: [("dead", 0)]}, "g") == {KEY: ["dead"]}


async def test_entries_are_found_however_sparse_and_whatever_their_ids(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """Pending entries are read in ranges: runs of them, lone ones among many acked entries,
    deleted ones in between and at the end, and ids whose parts differ in length (9-0 < 10-0
    as numbers, not as text) must all come out right."""
    ids = [f"{ms}-{seq}" for ms in (9, 10, 99, 100, 1000) for seq in (0, 1, 9, 10, 11)]
    ids += [f"1001-{seq}" for seq in range(400)]  # a long run to make spans grow
    pipe = r.pipeline(transaction=False)
    for i, entry_id in enumerate(ids):
        pipe.xadd(KEY, {"msg": str(i)}, id=entry_id)
    await pipe.execute()
    await r.xgroup_create(KEY, "g", "0")
    await deliver(r, KEY, "dead", len(ids))
    rng = random.Random(3)
    acked = {i for i in ids[25:] if rng.random() < 0.9}  # sparse in the long run
    acked |= {"9-1", "10-0", "99-10", "1000-0"}
    await r.xack(KEY, "g", *acked)
    gone = {"9-9", "100-0", "100-11", ids[-1]}  # in runs, between runs, at the very end
    await r.xdel(KEY, *gone)
    pending = [i for i in ids if i not in acked]

    batches = await drain(
        gateway, settings=settings(batch_size=37), dead_letter=DLQ, consumer="dead"
    )

    assert sum(b.dropped for b in batches) == len(gone - acked)
    copies = [(f[ORIGIN_ID_FIELD], f["msg"]) for _, f in (await r.xrange(KEY, min="(1001-399"))]
    expected = [(i, str(ids.index(i))) for i in pending if i not in gone]
    assert copies == expected, "each pending entry re-queued once, with its own fields"
    assert await pel(r, KEY) == {}
