"""Spreading costly measurements over polls."""

from __future__ import annotations

import zlib
from collections.abc import Iterable


def age_sample(keys: Iterable[str], poll_number: int, every: int) -> set[str]:
    """The keys whose oldest-pending age is measured in poll ``poll_number``: each key once
    every ``every`` polls, the keys spread evenly over the polls (by a stable hash, so a key
    keeps its turn as others come and go). Measuring it costs one XPENDING per busy group,
    the most expensive part of a poll."""
    if every <= 1:
        return set(keys)
    turn = poll_number % every
    return {key for key in keys if zlib.crc32(key.encode()) % every == turn}
