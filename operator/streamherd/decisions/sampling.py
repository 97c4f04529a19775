"""Spreading costly measurements over polls."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

from streamherd.observations import StreamState, StreamStatus


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


FirstUnreadHints = Mapping[str, Mapping[str, str]]
"""stream key -> {last-delivered-id: the id of the first entry after it}."""


def carry_first_unread(
    streams: Mapping[str, StreamState], sent: FirstUnreadHints
) -> dict[str, dict[str, str]]:
    """The hints for the next poll of these streams: what this poll looked up (a group's
    ``looked_up_after`` and ``first_unread_id``), and of the hints it was sent, those some
    group still used (a hint nobody's first unread entry matches is of a position every
    group has left). A stream that is not OK is forgotten. Bounded by the groups: one pair
    per distinct last-delivered-id of a lagging group. Whether a hint still holds is for the
    script to judge (observe.lua), never for the caller."""
    hints: dict[str, dict[str, str]] = {}
    for key, stream in streams.items():
        if stream.status is not StreamStatus.OK:
            continue
        pairs: dict[str, str] = {}
        used = {g.first_unread_id for g in stream.groups.values() if g.first_unread_id}
        for after, first in sent.get(key, {}).items():
            if first in used:
                pairs[after] = first
        for group in stream.groups.values():
            if group.looked_up_after is not None and group.first_unread_id is not None:
                pairs[group.looked_up_after] = group.first_unread_id
        if pairs:
            hints[key] = pairs
    return hints
