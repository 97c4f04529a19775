"""Recovery stays inside its group (issue 10, item 1), on a stream three groups read, as in the
flagship example (brain, compliance and crm on every conv:* call stream). Real redis-server
7.0 and 8.2; checked by ids."""

from __future__ import annotations

import redis.asyncio as aredis
from tests.janitor.helpers import deliver, idle, pel, settings

from streamherd.decisions.recovery import recovery_isolation
from streamherd.fields import (
    DELIVERIES_FIELD,
    GROUP_FIELD,
    ORIGIN_ID_FIELD,
    is_copy_for_another_group,
)
from streamherd.gateway import RedisGateway
from streamherd.gateway.recovery import Strategy, recover

KEY = "conv:42"
GROUPS = ("brain", "compliance", "crm")


async def call_stream(r: aredis.Redis, n: int) -> list[str]:
    ids = [str(await r.xadd(KEY, {"msg": str(i)})) for i in range(n)]
    for group in GROUPS:
        await r.xgroup_create(KEY, group, "0")
    return ids


async def fail(r: aredis.Redis, group: str, consumer: str, times: int) -> None:
    """A consumer of ``group`` reads its first entry ``times`` times and never acks it."""
    await r.xreadgroup(group, consumer, {KEY: ">"}, count=1)
    for _ in range(times - 1):
        await r.xreadgroup(group, consumer, {KEY: "0"}, count=1)


async def lags(r: aredis.Redis) -> dict[str, int]:
    return {g["name"]: g["lag"] for g in await r.xinfo_groups(KEY)}


async def test_another_groups_copy_never_spends_this_groups_deliveries(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """The issue's finding: brain's entry re-queued with deliveries 4 was read by crm as a new
    entry, and with crm's maxDeliveries 5 one failed crm attempt dead-lettered it. Now the copy
    names brain; in crm's PEL it is acknowledged (not crm's work: crm has the original) and
    never dead-lettered for crm."""
    (original,) = await call_stream(r, 1)
    await fail(r, "brain", "brain-1", 4)
    await idle(0.12)
    spec = settings(max_deliveries=5)
    brain = await recover(gateway, KEY, "brain", spec, dead_letter=f"{KEY}:dlq", min_idle_ms=100)
    assert brain.requeued == 1
    ((copy_id, copy),) = await r.xrange(KEY, min=f"({original}")
    assert (copy[ORIGIN_ID_FIELD], copy[DELIVERIES_FIELD], copy[GROUP_FIELD]) == (
        original,
        "4",
        "brain",
    )
    assert is_copy_for_another_group(copy, "crm") and not is_copy_for_another_group(copy, "brain")

    # crm's plain consumer reads the original and the copy (both new to it), fails the copy once.
    got = await r.xreadgroup("crm", "crm-1", {KEY: ">"})
    assert [entry_id for entry_id, _ in got[0][1]] == [original, copy_id]
    await r.xack(KEY, "crm", original)
    await idle(0.12)
    crm = await recover(gateway, KEY, "crm", spec, dead_letter=f"{KEY}:dlq", min_idle_ms=100)

    assert (crm.dead_lettered, crm.requeued, crm.foreign, crm.acked) == (0, 0, 1, 1)
    assert await r.exists(f"{KEY}:dlq") == 0, "nothing dead-lettered for crm"
    assert await pel(r, KEY, "crm") == {}
    assert set(await pel(r, KEY, "brain")) == set(), "brain's copy waits for brain's readers"
    assert (await lags(r))["brain"] == 1


async def test_poison_and_dead_letter_records_are_per_group(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """Each group counts its own deliveries of the same entry, across its own re-queues, and
    its dead-letter record names it."""
    (original,) = await call_stream(r, 1)
    spec = settings(max_deliveries=3)
    dlq = f"{KEY}:dlq"
    for attempt in range(3):
        for group in ("brain", "crm"):  # both fail it; compliance processes it
            await r.xreadgroup(group, f"{group}-{attempt}", {KEY: ">"})
    await r.xreadgroup("compliance", "compliance-1", {KEY: ">"})
    await r.xack(KEY, "compliance", original)
    # Three rounds: each group's janitor re-queues its own copy until its third delivery.
    for _ in range(3):
        await idle(0.12)
        for group in ("brain", "crm"):
            await recover(gateway, KEY, group, spec, dead_letter=dlq, min_idle_ms=100)
            got = await r.xreadgroup(group, f"{group}-x", {KEY: ">"})
            for entry_id, fields in got[0][1] if got else []:
                if is_copy_for_another_group(fields, group):  # what the SDK does
                    await r.xack(KEY, group, entry_id)
    await idle(0.12)
    for group in ("brain", "crm"):
        await recover(gateway, KEY, group, spec, dead_letter=dlq, min_idle_ms=100)

    records = [f for _, f in await r.xrange(dlq)]
    assert sorted((f[GROUP_FIELD], f[ORIGIN_ID_FIELD], f[DELIVERIES_FIELD]) for f in records) == [
        ("brain", original, "3"),
        ("crm", original, "3"),
    ], "one record per group, each with that group's own three deliveries"
    for group in GROUPS:
        assert await pel(r, KEY, group) == {}
    # Requeue's copies do count in compliance's lag (what RecoveryIsolated=False warns of) until
    # its consumer reads them; one that follows the contract acks them unprocessed.
    assert (await lags(r))["compliance"] == 4
    got = await r.xreadgroup("compliance", "compliance-1", {KEY: ">"})
    handed = []
    for entry_id, fields in got[0][1]:
        if is_copy_for_another_group(fields, "compliance"):
            await r.xack(KEY, "compliance", entry_id)
        else:
            handed.append(entry_id)
    assert handed == [] and (await lags(r))["compliance"] == 0


async def test_claim_recovers_inside_the_group_other_groups_lag_never_moves(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await call_stream(r, 6)
    for group in ("compliance", "crm"):  # the other groups are done with everything
        got = await r.xreadgroup(group, f"{group}-1", {KEY: ">"})
        await r.xack(KEY, group, *[entry_id for entry_id, _ in got[0][1]])
    await deliver(r, KEY, "brain-dead", 6, group="brain")
    before = await lags(r)

    batch = await recover(
        gateway,
        KEY,
        "brain",
        settings(Strategy.CLAIM),
        dead_letter=f"{KEY}:dlq",
        consumer="brain-dead",
        targets=["brain-live"],
    )

    assert batch.claimed == 6 and await r.xlen(KEY) == 6, "nothing copied"
    assert await lags(r) == before == {"brain": 0, "compliance": 0, "crm": 0}
    assert {owner for owner, _ in (await pel(r, KEY, "brain")).values()} == {"brain-live"}
    assert set(await pel(r, KEY, "brain")) == set(ids)


# ------------------------------------------------------------------ the condition


def test_requeue_on_a_stream_other_groups_read_is_said_before_it_happens() -> None:
    verdict = recovery_isolation(
        "brain", claim=False, groups_on_streams=[["brain", "crm"], ["brain", "compliance"]]
    )
    assert (verdict.type, verdict.status, verdict.reason) == (
        "RecoveryIsolated",
        "False",
        "SharedStream",
    )
    assert "'compliance', 'crm'" in verdict.message and "strategy Claim" in verdict.message
    alone = recovery_isolation("brain", claim=False, groups_on_streams=[["brain"], []])
    assert (alone.status, alone.reason) == ("True", "Reconciled")
    claim = recovery_isolation("brain", claim=True, groups_on_streams=[["brain", "crm"]])
    assert claim.status == "True" and "Claim" in claim.message


def test_many_other_groups_are_named_up_to_a_few() -> None:
    others = [f"g{i:02d}" for i in range(12)]
    verdict = recovery_isolation("brain", claim=False, groups_on_streams=[["brain", *others]])
    assert "'g04' and 7 more" in verdict.message and "g05" not in verdict.message
