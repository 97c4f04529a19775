"""Who manages a consumer group: decided from the claims recorded in Redis next to it
(gateway/ownership), so every operator process decides the same, whatever host name it
reaches the server by and however each ConsumerGroup spells its stream (a key, or a key
pattern that matches it).

The rule: among the claims on one group name whose streams overlap, the first recorded
(lowest ``seq``) manages; the others wait and name it, and the next in line takes over when
it is released (its ConsumerGroup deleted). An owner is never displaced by a later claim."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from streamherd.keys import glob_match
from streamherd.observations import GroupClaim

KEY, PATTERN = "key", "pattern"


def covers(claim: GroupClaim, key: str) -> bool:
    """Whether the claim's key or pattern takes in stream ``key``."""
    return claim.text == key if claim.kind == KEY else glob_match(claim.text, key)


def overlaps(mine: GroupClaim, other: GroupClaim, keys: Collection[str]) -> bool:
    """Whether the two claims can meet on one stream. A key against a key or a pattern: by
    name. Two patterns (whether two globs intersect is not worth deciding in general): on the
    streams ``keys`` that ``mine`` manages now."""
    if mine.kind == KEY:
        return covers(other, mine.text)
    if other.kind == KEY:
        return covers(mine, other.text)
    return any(covers(other, key) for key in keys)


def owner_elsewhere(
    mine: GroupClaim, claims: Iterable[GroupClaim], keys: Collection[str] = ()
) -> GroupClaim | None:
    """The claim that manages what ``mine`` wants, when it is not ``mine`` (the earliest of
    those before it that overlap it); None: ``mine`` manages it."""
    before = [
        c for c in claims if c.uid != mine.uid and c.seq < mine.seq and overlaps(mine, c, keys)
    ]
    return min(before, key=lambda c: c.seq) if before else None
