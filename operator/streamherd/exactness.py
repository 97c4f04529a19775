"""How far a number read from Redis can be trusted: the one vocabulary that observations,
decisions and the API's status share. Imports nothing: the lowest layer, with ``keys``."""

from __future__ import annotations

from enum import StrEnum


class Exactness(StrEnum):
    EXACT = "Exact"
    CLAMPED = "Clamped"
    """Redis 7.x reported a stale lag; bounded by the stream's length or the tail."""
    LOWER_BOUND = "LowerBound"
    """Redis could not say; counted up to a cap: the real lag is at least this."""
    UNKNOWN = "Unknown"


_STRENGTH = [Exactness.EXACT, Exactness.CLAMPED, Exactness.LOWER_BOUND, Exactness.UNKNOWN]


def weakest(a: Exactness, b: Exactness) -> Exactness:
    """The less trustworthy of two exactnesses."""
    return max(a, b, key=_STRENGTH.index)
