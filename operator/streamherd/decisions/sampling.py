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


FirstUnreadHints = Mapping[str, str]
"""stream key -> "L F L F ...": F the id of the first entry after last-delivered-id L, as an
earlier poll looked it up (observe.lua's hint argument for the key, kept in its form: a poll
sends thousands of them)."""


def carry_first_unread(
    streams: Mapping[str, StreamState], sent: FirstUnreadHints
) -> dict[str, str]:
    """The hints for the next poll of these streams: the ones this poll was sent, plus what
    it looked up (a group's ``looked_up_after`` and ``first_unread_id``). A stream that is
    not OK is forgotten. What a poll was not sent for a key (its age turn: the poller sends
    none then) is dropped: the hints of a key start again from its lookups once every
    ``age_every`` polls, so they hold at most a few pairs per group whatever the positions
    left meanwhile. Whether a hint still holds is for the script to judge (observe.lua),
    never for the caller. The common case (hints sent, nothing looked up) allocates
    nothing new for the key."""
    hints: dict[str, str] = {}
    for key, stream in streams.items():
        if stream.status is not StreamStatus.OK:
            continue
        hint = sent.get(key, "")
        for group in stream.groups.values():
            if group.looked_up_after is not None and group.first_unread_id is not None:
                pair = f"{group.looked_up_after} {group.first_unread_id}"
                if not hint:
                    hint = pair
                elif f" {pair} " not in f" {hint} ":
                    hint = f"{hint} {pair}"
        if hint:
            hints[key] = hint
    return hints
