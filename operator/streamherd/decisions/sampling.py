"""Spreading costly measurements over polls."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

from streamherd.observations import StreamState


def age_sample(keys: Iterable[str], poll_number: int, every: int) -> set[str]:
    """The keys whose oldest-pending age is measured in poll ``poll_number``: each key once
    every ``every`` polls, the keys spread evenly over the polls (by a stable hash, so a key
    keeps its turn as others come and go). Measuring it costs one XPENDING per busy group,
    the most expensive part of a poll."""
    if every <= 1:
        return set(keys)
    turn = poll_number % every
    return {key for key in keys if zlib.crc32(key.encode()) % every == turn}


OldestMemory = Mapping[tuple[str, str], str]
"""(stream key, group) -> the oldest pending id last measured."""


def carry_oldest(
    streams: Mapping[str, StreamState], memory: OldestMemory
) -> tuple[dict[tuple[str, str], str], set[str]]:
    """Fill in the oldest pending id of every group that has pending entries but was not
    measured in this poll, from its last measurement. The lowest pending id only ever moves
    up (entries are acknowledged; new ones have higher ids), so the age it gives is at worst
    an overstatement until the next measurement, and a group never flickers between a number
    and nothing across polls.

    Fills the (not yet published) GroupStates in place. Returns the memory for the next poll
    (only what this poll still shows pending: a stream or group gone, or nothing pending, is
    forgotten) and the keys to measure next time: groups pending with no measurement yet.
    """
    kept: dict[tuple[str, str], str] = {}
    unmeasured: set[str] = set()
    for key, stream in streams.items():
        for name, state in stream.groups.items():
            if state.pending == 0:
                continue
            if state.oldest_pending_measured and state.oldest_pending_id is not None:
                kept[key, name] = state.oldest_pending_id
                continue
            last = memory.get((key, name))
            if last is None:
                unmeasured.add(key)
            else:
                state.oldest_pending_id = kept[key, name] = last
    return kept, unmeasured
