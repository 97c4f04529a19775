"""Dead-letter streams' Redis I/O for `streamherd dlq`: read records a page at a time, their
lengths, replay an entry (``scripts/replay.lua``: one atomic call per entry), purge records.
What to replay, and how, is decided in ``streamherd.decisions.deadletter``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamherd.fields import (
    CONSUMER_FIELD,
    DELIVERIES_FIELD,
    GROUP_FIELD,
    ORIGIN_ID_FIELD,
    STREAM_FIELD,
)
from streamherd.gateway.client import REPLAY, RedisGateway, reply_fields
from streamherd.observations import DeadLetterRecord

PART_FIELD = "streamherd-part"
HEADER_FIELDS = frozenset(
    {ORIGIN_ID_FIELD, STREAM_FIELD, GROUP_FIELD, CONSUMER_FIELD, DELIVERIES_FIELD, PART_FIELD}
)
PAGE = 500
"""Records per XRANGE: a dead-letter stream is capped (maxLength, 100,000 by default), and a
page this size keeps each call short for Redis."""
XDEL_CHUNK = 1000


def record(key: str, entry_id: str, fields: Mapping[str, str]) -> DeadLetterRecord:
    deliveries = fields.get(DELIVERIES_FIELD)
    return DeadLetterRecord(
        key=key,
        id=entry_id,
        origin_id=fields.get(ORIGIN_ID_FIELD),
        stream=fields.get(STREAM_FIELD),
        group=fields.get(GROUP_FIELD),
        consumer=fields.get(CONSUMER_FIELD),
        deliveries=int(deliveries) if deliveries and deliveries.isdigit() else None,
        fields={k: v for k, v in fields.items() if k not in HEADER_FIELDS},
        part=fields.get(PART_FIELD),
    )


async def lengths(gateway: RedisGateway, keys: Sequence[str]) -> dict[str, int | None]:
    """XLEN of each key, one pipeline; None where it failed (a key of another type)."""
    replies = await gateway.pipeline([("XLEN", key) for key in keys])
    return {
        key: None if isinstance(reply, Exception) else int(reply)
        for key, reply in zip(keys, replies, strict=True)
    }


async def read(
    gateway: RedisGateway, key: str, *, after: str | None = None, count: int = PAGE
) -> list[DeadLetterRecord]:
    """Up to ``count`` records of ``key`` after the id ``after`` (from the start: None)."""
    start = "-" if after is None else f"({after}"
    (reply,) = await gateway.pipeline([("XRANGE", key, start, "+", "COUNT", count)])
    if isinstance(reply, Exception):
        raise gateway.classify(reply)
    return [record(key, str(entry_id), fields or {}) for entry_id, fields in reply]


async def read_all(gateway: RedisGateway, key: str) -> list[DeadLetterRecord]:
    """Every record of ``key``, a page at a time."""
    out: list[DeadLetterRecord] = []
    after = None
    while True:
        page = await read(gateway, key, after=after)
        out += page
        if len(page) < PAGE:
            return out
        after = page[-1].id


@dataclass(frozen=True)
class Replayed:
    """What replay.lua did for one entry (see the script for each outcome)."""

    outcome: str
    id: str
    """The copy's id (copied), the origin id (claimed, unread), or the record that did not
    match (mismatch)."""
    deleted: int
    """Records removed from the dead-letter stream."""


async def replay(
    gateway: RedisGateway,
    dead_letter: str,
    stream: str,
    group: str,
    origin_id: str,
    record_ids: Sequence[str],
    *,
    claim_to: str | None,
) -> Replayed:
    """Replay one entry (all its records) atomically: back into the group's PEL by id when
    ``claim_to`` names a consumer and the original is still in the stream, else as a copy
    tagged for the group. Idempotent: the records are the token."""
    args: list[Any] = [group, origin_id, "claim" if claim_to else "copy", claim_to or ""]
    (reply,) = await gateway.pipeline([REPLAY.command([dead_letter, stream], [*args, *record_ids])])
    if isinstance(reply, Exception):
        raise gateway.classify(reply)
    outcome, entry_id, deleted = reply
    return Replayed(str(outcome), str(entry_id), int(deleted))


async def purge(gateway: RedisGateway, dead_letter: str, record_ids: Sequence[str]) -> int:
    """Delete these records; returns how many existed."""
    commands = [
        ("XDEL", dead_letter, *record_ids[i : i + XDEL_CHUNK])
        for i in range(0, len(record_ids), XDEL_CHUNK)
    ]
    replies = await gateway.pipeline(commands) if commands else []
    for reply in replies:
        if isinstance(reply, Exception):
            raise gateway.classify(reply)
    return sum(int(r) for r in replies)


async def consumers(gateway: RedisGateway, stream: str, group: str) -> list[tuple[str, int]]:
    """(consumer, idle ms) of the group on the stream, most recently active first; empty
    when the stream or group does not exist."""
    (reply,) = await gateway.pipeline([("XINFO", "CONSUMERS", stream, group)])
    if isinstance(reply, Exception):
        return []
    found = [(str(f["name"]), int(f["idle"])) for f in map(reply_fields, reply)]
    return sorted(found, key=lambda c: c[1])


async def groups(gateway: RedisGateway, stream: str) -> list[str]:
    """The groups on a stream (empty when it does not exist)."""
    (reply,) = await gateway.pipeline([("XINFO", "GROUPS", stream)])
    if isinstance(reply, Exception):
        return []
    return [str(f["name"]) for f in map(reply_fields, reply)]
