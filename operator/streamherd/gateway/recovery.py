"""The janitor's Redis I/O: read a group's consumers, recover pending entries a batch at a
time, remove consumers. Each batch is one Lua script call (``scripts/recover.lua``), so an
entry is checked, moved and acknowledged atomically; the decisions about *which* consumers
are dead or removable are made in ``streamherd.decisions.recovery``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis import exceptions as rx

from streamherd.decisions.recovery import ConsumerState
from streamherd.gateway.client import RedisGateway, Script, reply_fields
from streamherd.gateway.errors import GatewayError

RECOVER = Script("recover")
REMOVE_CONSUMERS = Script("remove_consumers")
SCRIPTS = (RECOVER, REMOVE_CONSUMERS)


class Strategy(StrEnum):
    REQUEUE = "requeue"
    CLAIM = "claim"


@dataclass(frozen=True)
class Batch:
    """What one call of recover.lua did."""

    next_start: str | None
    """Where the next call starts ("(<id>"); None when the end of the PEL was reached."""
    examined: int
    requeued: int
    claimed: int
    dead_lettered: int
    dropped: int
    """Pending entries whose stream entry was trimmed or deleted: acknowledged."""
    held: int
    """Poison entries left pending because there is no dead-letter stream to move them to."""
    acked: int
    """Entries XACKed: requeued + dead-lettered + dropped, always (each was still pending)."""

    @property
    def recovered(self) -> int:
        return self.requeued + self.claimed


@dataclass(frozen=True)
class RecoverySettings:
    """How recover.lua treats entries; one value for a whole janitor pass."""

    strategy: Strategy
    max_deliveries: int
    batch_size: int
    dead_letter_cap: int


async def _evalsha(
    gateway: RedisGateway, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
) -> list[Any]:
    """EVALSHA ``script`` once per (keys, args), in one pipeline. A server that lost the
    script (restart, SCRIPT FLUSH, a new node) gets it loaded, and only the calls that
    failed for that are run again: a batch that ran must never run twice."""
    commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
    results = await gateway._pipeline(commands)
    missing = [i for i, r in enumerate(results) if isinstance(r, rx.NoScriptError)]
    if missing:
        await gateway._call(lambda c: c.script_load(script.source))
        again = await gateway._pipeline([commands[i] for i in missing])
        for i, result in zip(missing, again, strict=True):
            results[i] = result
    return results


async def consumers(
    gateway: RedisGateway, keys: Sequence[str], group: str
) -> dict[str, list[ConsumerState] | GatewayError]:
    """The group's consumers on each key (XINFO CONSUMERS, one pipeline); a key where the
    stream or the group does not exist gets its GatewayError."""
    replies = await gateway._pipeline([("XINFO", "CONSUMERS", key, group) for key in keys])
    out: dict[str, list[ConsumerState] | GatewayError] = {}
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, Exception):
            out[key] = gateway._classify(reply)
            continue
        out[key] = [_consumer(item) for item in reply]
    return out


def _consumer(item: Mapping[str, Any] | Sequence[Any]) -> ConsumerState:
    fields = reply_fields(item)
    return ConsumerState(str(fields["name"]), int(fields["pending"]), int(fields["idle"]))


async def recover(
    gateway: RedisGateway,
    key: str,
    group: str,
    settings: RecoverySettings,
    *,
    dead_letter: str | None,
    start: str = "-",
    consumer: str | None = None,
    min_idle_ms: int = 0,
    targets: Sequence[str] = (),
    offset: int = 0,
) -> Batch:
    """One batch of recover.lua on ``key``: the stale scan over every consumer's entries
    (``consumer`` None, entries idle >= ``min_idle_ms``), or all of one dead consumer's.
    ``dead_letter`` must be in the key's hash slot on a cluster (None: poison entries are
    held). ``targets`` (strategy claim) get entries round-robin from ``offset``."""
    keys = [key] if dead_letter is None else [key, dead_letter]
    args = [
        group,
        consumer or "",
        start,
        min_idle_ms,
        settings.batch_size,
        settings.max_deliveries,
        settings.dead_letter_cap,
        str(settings.strategy),
        offset,
        *(targets if settings.strategy is Strategy.CLAIM else ()),
    ]
    (reply,) = await _evalsha(gateway, RECOVER, [(keys, args)])
    if isinstance(reply, Exception):
        raise gateway._classify(reply)
    next_start, *counts = reply
    examined, requeued, claimed, dead_lettered, dropped, held, acked = (int(n) for n in counts)
    return Batch(
        next_start=str(next_start) or None,
        examined=examined,
        requeued=requeued,
        claimed=claimed,
        dead_lettered=dead_lettered,
        dropped=dropped,
        held=held,
        acked=acked,
    )


async def remove_consumers(
    gateway: RedisGateway, removals: Mapping[str, Sequence[tuple[str, int]]], group: str
) -> dict[str, list[str]]:
    """Remove consumers, per key: each (name, min idle ms) only if its PEL is empty and it
    has been idle that long, checked atomically (one script per key, one pipeline).
    Returns the names removed per key."""
    keys = [key for key, pairs in removals.items() if pairs]
    calls = [([key], [group, *(str(v) for pair in removals[key] for v in pair)]) for key in keys]
    replies = await _evalsha(gateway, REMOVE_CONSUMERS, calls)
    out: dict[str, list[str]] = {}
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, Exception):
            raise gateway._classify(reply)
        out[key] = [str(name) for name in reply]
    return out
