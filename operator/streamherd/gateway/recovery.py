"""The janitor's Redis I/O: read a group's consumers, recover pending entries a batch at a
time, remove consumers. Each batch is one call of ``scripts/recover.lua``, so an entry is
checked, moved and acknowledged atomically; many batches (keys, dead consumers) go in one
pipeline. The decisions about *which* consumers are dead or removable are made in
``streamherd.decisions.recovery``; the fields the script writes are in ``streamherd.fields``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streamherd.fields import ENTRY_FIELDS_MAX
from streamherd.gateway.client import RECOVER, REMOVE_CONSUMERS, RedisGateway, reply_fields
from streamherd.gateway.errors import GatewayError
from streamherd.observations import ConsumerState


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
    """Entries left pending because the dead-letter stream they need is missing or unusable
    (poison, or too large to copy)."""
    acked: int
    """Entries XACKed: requeued + dead-lettered + dropped + foreign, always (each was still
    pending)."""
    kept: int = 0
    """Stale entries left pending under strategy Claim: no live consumer but their owner."""
    foreign: int = 0
    """Re-queued copies made for another group, stale in this group's PEL: acknowledged."""
    oversized: int = 0
    """Entries with more fields than one command can copy: dead-lettered in parts, or held."""
    failed: int = 0
    """Entries whose move failed (``error`` says why): left pending as they were."""
    dead_letter_type: str | None = None
    """The dead-letter key's type when it is not a stream (then it was not written)."""
    error: str | None = None
    """The first failure of an entry in this batch."""

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
    max_fields: int = ENTRY_FIELDS_MAX


@dataclass(frozen=True)
class BatchCall:
    """One call of recover.lua: on ``key``, the stale scan over every consumer's entries
    (``consumer`` None, entries idle >= ``min_idle_ms``), or all of one dead consumer's.
    ``dead_letter`` must be in the key's hash slot on a cluster (None: poison entries are
    held). ``targets`` (strategy claim) get entries round-robin from ``offset``."""

    key: str
    dead_letter: str | None
    start: str = "-"
    consumer: str | None = None
    min_idle_ms: int = 0
    targets: Sequence[str] = ()
    offset: int = 0


async def consumers(
    gateway: RedisGateway, keys: Sequence[str], group: str
) -> dict[str, list[ConsumerState] | GatewayError]:
    """The group's consumers on each key (XINFO CONSUMERS, one pipeline); a key where the
    stream or the group does not exist gets its GatewayError."""
    replies = await gateway.pipeline([("XINFO", "CONSUMERS", key, group) for key in keys])
    out: dict[str, list[ConsumerState] | GatewayError] = {}
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, Exception):
            out[key] = gateway.classify(reply)
            continue
        out[key] = [_consumer(item) for item in reply]
    return out


def _consumer(item: Mapping[str, Any] | Sequence[Any]) -> ConsumerState:
    fields = reply_fields(item)
    return ConsumerState(str(fields["name"]), int(fields["pending"]), int(fields["idle"]))


async def recover_batches(
    gateway: RedisGateway, group: str, settings: RecoverySettings, calls: Sequence[BatchCall]
) -> list[Batch | GatewayError]:
    """Many batches in one pipeline (one per node in a cluster), in order: calls on one key
    run one after the other on its server, each atomic. A call that failed gets its
    GatewayError (nothing of it was done twice: see recover.lua)."""
    commands = [RECOVER.command(*_arguments(group, settings, call)) for call in calls]
    replies = await gateway.pipeline(commands) if commands else []
    return [
        gateway.classify(reply) if isinstance(reply, Exception) else _batch(reply)
        for reply in replies
    ]


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
    """One batch of recover.lua on ``key`` (see ``BatchCall``); raises GatewayError."""
    call = BatchCall(key, dead_letter, start, consumer, min_idle_ms, targets, offset)
    (result,) = await recover_batches(gateway, group, settings, [call])
    if isinstance(result, GatewayError):
        raise result
    return result


def _arguments(
    group: str, settings: RecoverySettings, call: BatchCall
) -> tuple[list[str], list[Any]]:
    keys = [call.key] if call.dead_letter is None else [call.key, call.dead_letter]
    args = [
        group,
        call.consumer or "",
        call.start,
        call.min_idle_ms,
        settings.batch_size,
        settings.max_deliveries,
        settings.dead_letter_cap,
        str(settings.strategy),
        call.offset,
        settings.max_fields,
        *(call.targets if settings.strategy is Strategy.CLAIM else ()),
    ]
    return keys, args


def _batch(reply: Sequence[Any]) -> Batch:
    next_start, *counts, dead_letter_type, error = reply
    examined, requeued, claimed, dead_lettered, dropped, held, acked = (int(n) for n in counts[:7])
    kept, foreign, oversized, failed = (int(n) for n in counts[7:])
    return Batch(
        next_start=str(next_start) or None,
        examined=examined,
        requeued=requeued,
        claimed=claimed,
        dead_lettered=dead_lettered,
        dropped=dropped,
        held=held,
        acked=acked,
        kept=kept,
        foreign=foreign,
        oversized=oversized,
        failed=failed,
        dead_letter_type=str(dead_letter_type) or None,
        error=str(error) or None,
    )


async def remove_consumers(
    gateway: RedisGateway, removals: Mapping[str, Sequence[tuple[str, int]]], group: str
) -> dict[str, list[str]]:
    """Remove consumers, per key: each (name, min idle ms) only if its PEL is empty and it
    has been idle that long, checked atomically (one script per key, one pipeline).
    Returns the names removed per key."""
    keys = [key for key, pairs in removals.items() if pairs]
    commands = [
        REMOVE_CONSUMERS.command([key], [group, *(str(v) for pair in removals[key] for v in pair)])
        for key in keys
    ]
    replies = await gateway.pipeline(commands) if commands else []
    out: dict[str, list[str]] = {}
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, Exception):
            raise gateway.classify(reply)
        out[key] = [str(name) for name in reply]
    return out
