"""Set-up helpers shared by the janitor's tests."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aredis

from streamherd.api.consumergroup import Recovery
from streamherd.api.durations import Duration
from streamherd.gateway.recovery import RecoverySettings, Strategy


async def seed(r: aredis.Redis, key: str, n: int, start: int = 0, **extra: Any) -> list[str]:
    """``n`` entries {"msg": "<i>", "body": ...} (plus ``extra`` fields); the group "g" is
    created at 0 if missing. Returns the ids."""
    pipe = r.pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.xadd(key, {"msg": str(i), "body": f"order {i}", **extra})
    ids = [str(i) for i in await pipe.execute()]
    groups = [g["name"] for g in await r.xinfo_groups(key)]
    if "g" not in groups:
        await r.xgroup_create(key, "g", "0")
    return ids


async def deliver(
    r: aredis.Redis, key: str, consumer: str, count: int, group: str = "g"
) -> list[str]:
    reply = await r.xreadgroup(group, consumer, {key: ">"}, count=count)
    return [entry_id for entry_id, _ in reply[0][1]] if reply else []


async def pel(r: aredis.Redis, key: str, group: str = "g") -> dict[str, tuple[str, int]]:
    """id -> (owner, delivery count)."""
    rows = await r.xpending_range(key, group, "-", "+", 100_000)
    return {row["message_id"]: (row["consumer"], row["times_delivered"]) for row in rows}


async def idle(seconds: float) -> None:
    """Let delivered entries age past a min idle (idle time is measured by Redis's clock)."""
    await asyncio.sleep(seconds)


def settings(
    strategy: Strategy = Strategy.REQUEUE,
    *,
    max_deliveries: int = 5,
    batch_size: int = 500,
    dead_letter_cap: int = 100_000,
) -> RecoverySettings:
    return RecoverySettings(strategy, max_deliveries, batch_size, dead_letter_cap)


def recovery(**fields: Any) -> Recovery:
    """A Recovery spec. ``min_idle``/``interval`` may be shorter than the API's 1s floor here:
    the pass itself takes any value, and tests should not wait seconds for entries to age."""
    short = {k: Duration.parse(fields.pop(k)) for k in ("min_idle", "interval") if k in fields}
    return Recovery(**fields).model_copy(update=short)
