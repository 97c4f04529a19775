"""Retention's Redis I/O: one ``retain.lua`` call per stream (the safe floor computed and
applied atomically), pipelined, and deletion of managed streams (``unlink_managed.lua``).

Costs measured on this project's 2-core machine: a step on a stream that needs no listing
(the common case: the floor is past the trim point, or at its start) is a few commands of
O(1) or O(log n) plus XTRIM's O(trimmed), ~20 ns an entry; listing entries (to decide a
maxLength trim with a lagging group on Redis 7.x, or to count what hardMaxLength drops)
costs ~4 us an entry in Lua, so a call lists at most ``walk_limit`` entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamherd.gateway.client import RETAIN, UNLINK_MANAGED, RedisGateway
from streamherd.observations import (
    Hold,
    HoldReason,
    ManagedGroup,
    RetentionRules,
    StepOutcome,
)

ACKED_SINCE = (8, 2, 0)
"""XTRIM ... ACKED (KEEPREF/DELREF/ACKED) exists from Redis 8.2."""

_REASONS = {"age": HoldReason.MAX_AGE, "length": HoldReason.MAX_LENGTH}


@dataclass(frozen=True)
class Limits:
    """How much one script call may do: a script blocks Redis while it runs."""

    trim_limit: int = 10_000
    """Entries one XTRIM may remove (approximate trims pass it as LIMIT)."""
    walk_limit: int = 500
    """Entries one XRANGE inside the script may list (~2 ms on 7.0 here)."""


def acked_available(gateway: RedisGateway) -> bool:
    """Whether the server has ACKED trimming (then retain.lua trims with it, exact: approximate
    + ACKED trims nothing on 8.2.2-8.4, redis #14656, checked on 8.2.3 by tests/retention;
    and not on a stream lacking a group of ours: ACKED knows only the groups that exist)."""
    return gateway.server_version is not None and gateway.server_version >= ACKED_SINCE


async def retain(
    gateway: RedisGateway,
    keys: Sequence[str],
    rules: RetentionRules,
    managed: Sequence[ManagedGroup],
    *,
    limits: Limits = Limits(),
    acked: bool | None = None,
) -> list[StepOutcome]:
    """One retention step on each key, in one pipeline (one per node on a cluster).
    ``acked``: use the server's ACKED trimming (None: when the server has it).
    Raises GatewayError when Redis cannot be reached at all."""
    await gateway.connect()
    use_acked = acked_available(gateway) if acked is None else acked
    args = [
        _number(rules.max_length),
        _number(rules.max_age_ms),
        "1" if rules.approximate else "0",
        "1" if rules.respect_groups else "0",
        _number(rules.hard_max_length),
        limits.trim_limit,
        limits.walk_limit,
        "1" if use_acked else "0",
        _number(rules.delete_idle_after_ms),
        len(managed),
        *(value for group in managed for value in (group.name, group.start)),
    ]
    replies = await gateway.pipeline([RETAIN.command([key], args) for key in keys])
    return [_outcome(gateway, key, reply) for key, reply in zip(keys, replies, strict=True)]


def _number(value: int | None) -> int:
    return -1 if value is None else value


def _outcome(gateway: RedisGateway, key: str, reply: Any) -> StepOutcome:
    if isinstance(reply, Exception):
        return StepOutcome(key, problem=gateway.classify(reply).message)
    status = reply[0]
    if status == "missing":
        return StepOutcome(key, missing=True)
    if status == "wrongtype":
        return StepOutcome(key, problem=f"key holds a {reply[1]}, not a stream")
    trimmed, dropped, deleted, more, length, floor, count = reply[1:8]
    holds = tuple(
        Hold(str(reply[8 + 3 * i]), _REASONS[reply[9 + 3 * i]], str(reply[10 + 3 * i]))
        for i in range(int(count))
    )
    return StepOutcome(
        key,
        trimmed=int(trimmed),
        unconsumed_dropped=int(dropped),
        deleted=bool(int(deleted)),
        more=bool(int(more)),
        length=int(length),
        floor=str(floor) or None,
        holds=holds,
    )


async def unlink_managed(
    gateway: RedisGateway, keys: Sequence[str], groups: Sequence[str]
) -> dict[str, str]:
    """UNLINK each key that carries one of ``groups`` (checked atomically per key, one
    pipeline). Returns key -> 'deleted' | 'unmanaged' | 'missing' | 'wrongtype'.
    Raises GatewayError for a Redis failure."""
    if not keys:
        return {}
    replies = await gateway.pipeline([UNLINK_MANAGED.command([key], groups) for key in keys])
    out = {}
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, Exception):
            raise gateway.classify(reply)
        out[key] = str(reply)
    return out
