"""retain.lua against real redis-server 7.0 and 8.2: MAXLEN and MINID, exact and approximate,
the safe floor with several groups (one lagging), hardMaxLength, idle deletion, and the 8.2
ACKED path giving the script path's result. Every check is by entry ids."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import VALKEY
from redis.exceptions import ResponseError

from streamherd.gateway import RedisGateway
from streamherd.gateway.retention import Limits, acked_available, retain, unlink_managed
from streamherd.observations import HoldReason, ManagedGroup, RetentionRules, StepOutcome

HOUR_MS = 3_600_000


async def fill(r: aredis.Redis, key: str, n: int, *, start_ms: int | None = None) -> list[str]:
    """n entries; with ``start_ms``, at explicit ids one ms apart from then (old entries)."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        entry_id = "*" if start_ms is None else f"{start_ms + i}-0"
        pipe.xadd(key, {"n": i}, id=entry_id)
    return [str(i) for i in await pipe.execute()]


async def group(r: aredis.Redis, key: str, name: str, *, read: int, acked: int) -> None:
    """A group that was delivered the first ``read`` entries and acknowledged the first ``acked``."""
    await r.xgroup_create(key, name, "0")
    if read:
        delivered = await r.xreadgroup(name, "c1", {key: ">"}, count=read)
        ids = [entry_id for entry_id, _ in delivered[0][1]]
        if acked:
            await r.xack(key, name, *ids[:acked])


async def ids_of(r: aredis.Redis, key: str) -> list[str]:
    return [entry_id for entry_id, _ in await r.xrange(key)]


async def until_done(
    gateway: RedisGateway, key: str, rules: RetentionRules, **options: object
) -> list[StepOutcome]:
    """Steps until no limit stops one (what a pass does within its time budget)."""
    steps: list[StepOutcome] = []
    for _ in range(1000):
        (step,) = await retain(gateway, [key], rules, (), **options)  # type: ignore[arg-type]
        steps.append(step)
        if not step.more:
            return steps
    raise AssertionError("retention never finished")


# ------------------------------------------------------------------ without groups


async def test_max_length_exact_keeps_exactly_the_newest(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await fill(r, "s", 1000)
    (step,) = await retain(gateway, ["s"], RetentionRules(max_length=300, approximate=False), ())
    assert step.trimmed == 700 and step.length == 300
    assert await ids_of(r, "s") == ids[700:]


async def test_max_length_approximate_removes_whole_nodes_never_more_than_asked(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await fill(r, "s", 1000)
    (step,) = await retain(gateway, ["s"], RetentionRules(max_length=300), ())
    left = await ids_of(r, "s")
    assert 300 <= len(left) < 400, "~ keeps at least maxLength, within one node"
    assert left == ids[-len(left) :] and step.trimmed == 1000 - len(left)


async def test_max_age_exact_and_approximate(gateway: RedisGateway, r: aredis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    old = await fill(r, "s", 500, start_ms=now_ms - 3 * HOUR_MS)
    young = await fill(r, "s", 50)
    await fill(r, "t", 500, start_ms=now_ms - 3 * HOUR_MS)
    await fill(r, "t", 50)
    (exact,) = await retain(
        gateway, ["s"], RetentionRules(max_age_ms=2 * HOUR_MS, approximate=False), ()
    )
    assert exact.trimmed == len(old) and await ids_of(r, "s") == young
    (approx,) = await retain(gateway, ["t"], RetentionRules(max_age_ms=2 * HOUR_MS), ())
    left = await ids_of(r, "t")
    assert 50 <= len(left) < 150 and approx.trimmed == 550 - len(left)
    assert await r.xlen("t") == len(left)


async def test_a_stream_without_groups_has_nothing_to_protect(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await fill(r, "s", 100)
    (step,) = await retain(gateway, ["s"], RetentionRules(max_length=0, approximate=False), ())
    assert step.trimmed == 100 and step.floor is None and step.holds == ()


async def test_a_managed_group_not_created_yet_protects_from_its_start(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    """A call stream found before its groups exist: the group will start at '0' (or at its
    resource's creation time), so what lies from there on is not retention's to take. The
    server's ACKED knows nothing of a group that does not exist: it would trim it all."""
    ids = await fill(r, "s", 100)
    rules = RetentionRules(max_length=0, approximate=False)
    (step,) = await retain(gateway, ["s"], rules, [ManagedGroup("brain", "0")])
    assert step.trimmed == 0 and await ids_of(r, "s") == ids
    (step,) = await retain(gateway, ["s"], rules, [ManagedGroup("brain", ids[59])])
    assert step.trimmed == 60 and await ids_of(r, "s") == ids[60:]
    (step,) = await retain(gateway, ["s"], rules, [ManagedGroup("brain", "$")])
    assert step.trimmed == 40, "'$' starts at the stream's end: it protects nothing there"


# ------------------------------------------------------------------ the safe floor


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "approximate"])
async def test_the_floor_keeps_a_lagging_groups_pending_and_unread_entries(
    gateway: RedisGateway, r: aredis.Redis, approximate: bool
) -> None:
    ids = await fill(r, "s", 1000)
    await group(r, "s", "fast", read=1000, acked=1000)
    await group(r, "s", "slow", read=600, acked=400)  # pending 400..599, unread 600..999
    rules = RetentionRules(max_length=100, approximate=approximate)
    steps = await until_done(gateway, "s", rules)
    left = await ids_of(r, "s")
    assert set(ids[400:]) <= set(left), "the slow group's pending and unread entries survive"
    assert left == ids[-len(left) :]
    assert len(left) <= 600 + (0 if not approximate else 100)
    assert sum(s.trimmed for s in steps) == 1000 - len(left)
    assert steps[-1].floor == ids[400]
    assert [(h.group, h.reason) for h in steps[-1].holds] == [("slow", HoldReason.MAX_LENGTH)]
    # The slow group catches up: now the stream goes down to maxLength.
    pending = [p["message_id"] for p in await r.xpending_range("s", "slow", "-", "+", 1000)]
    await r.xack("s", "slow", *pending)
    await r.xreadgroup("slow", "c1", {"s": ">"}, count=1000)
    await r.xack("s", "slow", *ids[600:])
    steps = await until_done(gateway, "s", rules)
    left = await ids_of(r, "s")
    assert (len(left) == 100) if not approximate else (100 <= len(left) < 200)
    assert left == ids[-len(left) :] and steps[-1].holds == ()


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "approximate"])
async def test_max_age_stops_at_the_floor_and_names_the_group(
    gateway: RedisGateway, r: aredis.Redis, approximate: bool
) -> None:
    now_ms = int(time.time() * 1000)
    ids = await fill(r, "s", 300, start_ms=now_ms - 3 * HOUR_MS)
    ids += await fill(r, "s", 10)
    await group(r, "s", "fast", read=310, acked=310)
    await group(r, "s", "slow", read=120, acked=100)  # needs ids[100] on
    (step,) = await retain(
        gateway, ["s"], RetentionRules(max_age_ms=2 * HOUR_MS, approximate=approximate), ()
    )
    left = await ids_of(r, "s")
    assert set(ids[100:]) <= set(left) and left == ids[-len(left) :]
    assert (len(left) == 210) if not approximate else (210 <= len(left) < 310)
    assert [(h.group, h.reason, h.floor) for h in step.holds] == [
        ("slow", HoldReason.MAX_AGE, ids[100])
    ]


async def test_entries_of_a_group_that_read_nothing_are_all_kept(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await fill(r, "s", 50)
    await group(r, "s", "idle", read=0, acked=0)
    (step,) = await retain(gateway, ["s"], RetentionRules(max_length=0, approximate=False), ())
    assert step.trimmed == 0 and await ids_of(r, "s") == ids
    assert [h.group for h in step.holds] == ["idle"]


async def test_without_respect_for_groups_the_policy_trims_regardless(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await fill(r, "s", 100)
    await group(r, "s", "slow", read=10, acked=0)
    rules = RetentionRules(max_length=20, approximate=False, respect_groups=False)
    (step,) = await retain(gateway, ["s"], rules, ())
    assert step.trimmed == 80 and await ids_of(r, "s") == ids[80:]


@pytest.mark.parametrize("walk_limit", [500, 7], ids=["walk-500", "walk-7"])
async def test_a_lone_pending_entry_in_the_middle_is_decided_by_walking(
    gateway: RedisGateway, r: aredis.Redis, walk_limit: int
) -> None:
    """The script path (all 7.x has): the floor lies inside the stream and Redis's counters
    cannot tell whether what is above it fits in maxLength: the script counts (bounded), or
    trims what is certainly below the floor a walk at a time. The end state is the same."""
    ids = await fill(r, "s", 1000)
    await group(r, "s", "g", read=1000, acked=0)
    await r.xack("s", "g", *ids[:499], *ids[500:])  # only ids[499] is pending
    rules = RetentionRules(max_length=100, approximate=False)
    limits = Limits(walk_limit=walk_limit)
    steps = await until_done(gateway, "s", rules, limits=limits, acked=False)
    assert await ids_of(r, "s") == ids[499:], "everything below the pending entry, no more"
    assert [h.group for h in steps[-1].holds] == ["g"]
    # A pending entry near the tail: what lies above the floor fits, so maxLength is kept.
    tail = await fill(r, "t", 1000)
    await r.xgroup_create("t", "g", tail[949])
    await r.xreadgroup("g", "c1", {"t": ">"}, count=1)  # tail[950] pending
    await r.xgroup_setid("t", "g", tail[-1])
    steps = await until_done(gateway, "t", rules, limits=limits, acked=False)
    assert await ids_of(r, "t") == tail[900:] and steps[-1].holds == ()


async def test_on_82_acked_trims_around_a_lone_pending_entry(
    gateway: RedisGateway, r: aredis.Redis, server: object
) -> None:
    """The server's ACKED removes each entry every group acknowledged and leaves the pending
    one in place: maxLength is reached without losing it (the script path stops at it)."""
    await gateway.connect()
    if not acked_available(gateway):
        # Redis 7.0, and Valkey 9.1 (XTRIM ... ACKED is a syntax error there; it reports 7.2.4)
        assert getattr(server, "version", "") in ("7.0", VALKEY)
        return
    ids = await fill(r, "s", 1000)
    await group(r, "s", "g", read=1000, acked=0)
    await r.xack("s", "g", *ids[:499], *ids[500:])
    steps = await until_done(gateway, "s", RetentionRules(max_length=100))
    assert await ids_of(r, "s") == [ids[499], *ids[-99:]]
    assert steps[-1].holds == () and sum(s.trimmed for s in steps) == 900
    info = {g["name"]: g for g in await r.xinfo_groups("s")}
    assert info["g"]["pending"] == 1 and info["g"]["lag"] == 0


async def test_a_trim_limit_bounds_each_call_and_the_next_call_goes_on(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await fill(r, "s", 5000)
    await group(r, "s", "g", read=5000, acked=5000)
    rules = RetentionRules(max_length=10, approximate=False)
    steps = await until_done(gateway, "s", rules, limits=Limits(trim_limit=1000))
    assert len(steps) >= 5 and all(s.trimmed <= 1000 for s in steps)
    assert await ids_of(r, "s") == ids[-10:]


# ------------------------------------------------------------------ hardMaxLength


@pytest.mark.parametrize("walk_limit", [500, 8], ids=["walk-500", "walk-8"])
async def test_hard_max_length_drops_unconsumed_entries_and_counts_them(
    gateway: RedisGateway, r: aredis.Redis, walk_limit: int
) -> None:
    ids = await fill(r, "s", 100)
    await group(r, "s", "fast", read=100, acked=100)
    await group(r, "s", "slow", read=30, acked=20)  # needs ids[20] on
    rules = RetentionRules(max_length=10, hard_max_length=50, approximate=False)
    steps = await until_done(gateway, "s", rules, limits=Limits(walk_limit=walk_limit))
    assert await ids_of(r, "s") == ids[50:]
    assert sum(s.trimmed for s in steps) == 50
    assert sum(s.unconsumed_dropped for s in steps) == 30, "ids[20:50] were not consumed"
    # The dropped entries still sit in the slow group's PEL (ids 20..29) until the janitor
    # acknowledges them: they need no protection; the group still needs what it has not read.
    (step,) = await retain(gateway, ["s"], rules, ())
    assert step.floor == ids[30] and step.unconsumed_dropped == 0 and step.trimmed == 0


async def test_hard_max_length_with_every_group_done_drops_nothing_unconsumed(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    ids = await fill(r, "s", 100)
    await group(r, "s", "g", read=100, acked=100)
    (step,) = await retain(
        gateway, ["s"], RetentionRules(hard_max_length=40, approximate=False), ()
    )
    assert step.trimmed == 60 and step.unconsumed_dropped == 0
    assert await ids_of(r, "s") == ids[60:]


# ------------------------------------------------------------------ idle streams


async def test_an_ended_call_whose_groups_are_done_is_deleted(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    now_ms = int(time.time() * 1000)
    idle = RetentionRules(delete_idle_after_ms=60_000)
    managed = [ManagedGroup("brain", "$"), ManagedGroup("crm", "$")]
    cases = {"done": (20, 20), "pending": (20, 19), "unread": (19, 19)}
    for key, (read, acked) in cases.items():
        await fill(r, f"conv:{key}", 20, start_ms=now_ms - 120_000)
        await group(r, f"conv:{key}", "brain", read=read, acked=acked)
        await group(r, f"conv:{key}", "crm", read=20, acked=20)
    await fill(r, "conv:live", 20)
    await group(r, "conv:live", "brain", read=20, acked=20)
    await fill(r, "conv:unmanaged", 20, start_ms=now_ms - 120_000)
    await group(r, "conv:unmanaged", "someone-else", read=20, acked=20)
    await fill(r, "conv:trimmed-empty", 5, start_ms=now_ms - 120_000)
    await group(r, "conv:trimmed-empty", "brain", read=5, acked=5)
    await r.xtrim("conv:trimmed-empty", maxlen=0, approximate=False)
    keys = [
        "conv:done",
        "conv:pending",
        "conv:unread",
        "conv:live",
        "conv:unmanaged",
        "conv:trimmed-empty",
    ]
    steps = {s.key: s for s in await retain(gateway, keys, idle, managed)}
    assert {k for k, s in steps.items() if s.deleted} == {"conv:done", "conv:trimmed-empty"}
    assert sorted(await r.keys("conv:*")) == [
        "conv:live",
        "conv:pending",
        "conv:unmanaged",
        "conv:unread",
    ]


async def test_a_managed_group_still_to_come_keeps_an_idle_stream(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    now_ms = int(time.time() * 1000)
    ids = await fill(r, "conv:1", 10, start_ms=now_ms - 120_000)
    await group(r, "conv:1", "brain", read=10, acked=10)
    rules = RetentionRules(delete_idle_after_ms=60_000)
    managed = [ManagedGroup("brain", "$"), ManagedGroup("compliance", "0")]
    (step,) = await retain(gateway, ["conv:1"], rules, managed)
    assert not step.deleted and await r.exists("conv:1")
    managed = [ManagedGroup("brain", "$"), ManagedGroup("compliance", ids[-1])]
    (step,) = await retain(gateway, ["conv:1"], rules, managed)
    assert step.deleted, "a group that would start after the last entry has nothing to read"


async def test_wrong_types_and_missing_keys_are_reported_not_touched(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await r.set("conv:meta", "x")
    steps = await retain(gateway, ["conv:meta", "conv:gone"], RetentionRules(max_length=0), ())
    assert steps[0].problem == "key holds a string, not a stream"
    assert steps[1].missing and await r.get("conv:meta") == "x"


# ------------------------------------------------------------------ Redis 8.2: ACKED


async def test_acked_is_used_only_where_the_server_has_it(
    gateway: RedisGateway, r: aredis.Redis, server: object
) -> None:
    await gateway.connect()
    assert acked_available(gateway) == (getattr(server, "version", "") == "8.2")


async def test_approximate_acked_trims_nothing_on_this_82_and_acked_protects_no_groupless_stream(
    r: aredis.Redis, server: object
) -> None:
    """The facts behind using ACKED only for exact trims, and never for a stream whose groups
    are still to come (redis #14656, fixed for 8.6). If a new server changes them, this fails:
    then look again."""
    if getattr(server, "version", "") != "8.2":
        with pytest.raises(ResponseError):
            await r.execute_command("XTRIM", "s", "MAXLEN", "=", 0, "ACKED")
        return
    await fill(r, "s", 1000)
    await group(r, "s", "g", read=1000, acked=1000)
    assert await r.execute_command("XTRIM", "s", "MAXLEN", "~", 0, "ACKED") == 0
    assert await r.execute_command("XTRIM", "s", "MAXLEN", "~", 0, "LIMIT", 10000, "ACKED") == 0
    assert await r.execute_command("XTRIM", "s", "MAXLEN", "=", 0, "ACKED") == 1000
    await fill(r, "t", 10)
    assert await r.execute_command("XTRIM", "t", "MAXLEN", "=", 0, "ACKED") == 10


SCENARIOS = {
    # name: (entries, [(group, read, acked)], rules)
    "lagging-group": (1000, [("a", 1000, 1000), ("b", 600, 400)], RetentionRules(max_length=100)),
    "fits-above-floor": (1000, [("a", 1000, 990)], RetentionRules(max_length=100)),
    "all-consumed": (1000, [("a", 1000, 1000), ("b", 1000, 1000)], RetentionRules(max_length=5)),
    "nothing-read": (100, [("a", 0, 0)], RetentionRules(max_length=5)),
    "old-lagging": (
        300,
        [("a", 300, 300), ("b", 120, 100)],
        RetentionRules(max_age_ms=HOUR_MS, max_length=250),
    ),
    "hard-cap": (
        500,
        [("a", 500, 500), ("b", 100, 50)],
        RetentionRules(max_length=100, hard_max_length=200),
    ),
}


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "approximate"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_the_acked_path_gives_the_script_paths_result(
    gateway: RedisGateway, r: aredis.Redis, server: object, scenario: str, approximate: bool
) -> None:
    """The issue's case, several groups with one lagging: on 8.2 the same streams are trimmed
    once with the server's ACKED and once by the script's own floor, and the same entries
    survive (approximate: the script's ~ keeps up to a node more), the same groups are named,
    the same unconsumed entries are counted as dropped. On 7.0 only the script path exists."""
    entries, groups, rules = SCENARIOS[scenario]
    rules = RetentionRules(**{**rules.__dict__, "approximate": approximate})
    now_ms = int(time.time() * 1000)
    outcomes = {}
    for key, acked in (("with-acked", True), ("script", False)):
        if acked and getattr(server, "version", "") != "8.2":
            continue
        ids = await fill(r, key, entries, start_ms=now_ms - 2 * HOUR_MS)
        for name, read, ack in groups:
            await group(r, key, name, read=read, acked=ack)
        steps = await until_done(gateway, key, rules, acked=acked)
        survivors = [ids.index(i) for i in await ids_of(r, key)]
        assert survivors == list(range(entries - len(survivors), entries)), "a suffix"
        outcomes[key] = (
            len(survivors),
            sum(s.unconsumed_dropped for s in steps),
            sorted((h.group, h.reason) for h in steps[-1].holds),
        )
    if "with-acked" in outcomes:
        acked_len, *acked_rest = outcomes["with-acked"]
        script_len, *script_rest = outcomes["script"]
        assert acked_rest == script_rest
        if approximate:
            assert 0 <= script_len - acked_len < 100
        else:
            assert acked_len == script_len


# ------------------------------------------------------------------ deletion


async def test_unlink_managed_deletes_only_keys_carrying_a_managed_group(
    gateway: RedisGateway, r: aredis.Redis
) -> None:
    await fill(r, "conv:1", 3)
    await group(r, "conv:1", "brain", read=0, acked=0)
    await fill(r, "conv:2", 3)
    await group(r, "conv:2", "other", read=0, acked=0)
    await fill(r, "conv:3", 3)
    await r.set("conv:4", "x")
    outcome = await unlink_managed(
        gateway, ["conv:1", "conv:2", "conv:3", "conv:4", "conv:5"], ["brain", "crm"]
    )
    assert outcome == {
        "conv:1": "deleted",
        "conv:2": "unmanaged",
        "conv:3": "unmanaged",
        "conv:4": "wrongtype",
        "conv:5": "missing",
    }
    assert sorted(await r.keys("conv:*")) == ["conv:2", "conv:3", "conv:4"]
