"""A ConsumerGroup's numbers over all its streams (one key, or every key of a pattern)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streamherd.decisions.ages import entry_age_ms
from streamherd.decisions.lag import group_lag
from streamherd.observations import (
    Exactness,
    GroupState,
    HasBacklog,
    Observation,
    Reading,
    StreamStatus,
    weakest,
)


@dataclass(frozen=True)
class GroupTotals(HasBacklog):
    """Sums over the streams the group is on. When the endpoint could not be read,
    ``known`` is False and every number is unknown (never zero)."""

    known: bool
    streams: int = 0
    pending: int | None = None
    pending_exactness: Exactness = Exactness.EXACT
    """LowerBound when some of the group's streams could not be read: their pending entries
    are not in the sum. (A stream without the group holds none: that keeps it exact.)"""
    lag: Reading = field(default_factory=Reading.unknown)
    consumers: int | None = None
    oldest_pending_age_ms: int | None = None
    """How long ago the oldest unfinished entry was added: Redis's clock now minus the time
    in its id, over every stream (None when nothing is pending, not yet measured, or its id's
    time is not a time: ``decisions.ages``)."""
    lag_age_ms: Reading = field(default_factory=Reading.unknown)
    """Lag in time: how long ago the oldest entry the group has not read yet was added (the
    first entry after last-delivered-id), the largest over its streams; exactly 0 when
    nothing is unread. A lower bound when some stream's could not be told (unreadable, the
    group not there yet, an id that is not a time); unknown when no stream's could."""
    entries_read: int | None = None
    missing_group_on: tuple[str, ...] = ()
    """Streams that exist but lack the group: the controller creates it there."""
    missing_streams: tuple[str, ...] = ()

    @classmethod
    def unknown(cls) -> GroupTotals:
        return cls(known=False)


def group_totals(observation: Observation, keys: Iterable[str], group: str) -> GroupTotals:
    if observation.problem is not None:
        return GroupTotals.unknown()
    states: list[GroupState] = []
    lag = Reading.exact(0)
    missing_group: list[str] = []
    missing_streams: list[str] = []
    ages: list[int] = []
    lag_ages: list[int | None] = []
    unreadable = False
    for key in keys:
        stream = observation.streams.get(key)
        if (
            stream is None
            or stream.status is StreamStatus.ERROR
            or stream.status is StreamStatus.WRONG_TYPE
        ):
            unreadable = True
            continue
        if stream.status is StreamStatus.MISSING:
            missing_streams.append(key)
            continue
        state = stream.groups.get(group)
        if state is None:
            missing_group.append(key)
        else:
            states.append(state)
            stream_lag = group_lag(stream, state, observation.lag_count_cap)
            lag = lag + stream_lag
            lag_ages.append(_lag_age_ms(stream.server_time_ms, state, stream_lag))
            now_ms = stream.server_time_ms
            if state.pending and state.oldest_pending_id and now_ms is not None:
                age = entry_age_ms(state.oldest_pending_id, now_ms)
                if age is not None:
                    ages.append(age)
    if unreadable and not states:
        return GroupTotals.unknown()
    if (missing_group or unreadable) and lag.value is not None:
        # Streams not (yet) counted: what we have is at least the truth, not all of it.
        lag = Reading(lag.value, weakest(lag.exactness, Exactness.LOWER_BOUND))
    reads = [s.entries_read for s in states]
    return GroupTotals(
        known=True,
        streams=len(states),
        pending=sum(s.pending for s in states),
        pending_exactness=Exactness.LOWER_BOUND if unreadable else Exactness.EXACT,
        lag=lag,
        consumers=sum(s.consumers for s in states),
        oldest_pending_age_ms=max(ages) if ages else None,
        lag_age_ms=_oldest(lag_ages, partial=unreadable or bool(missing_group)),
        entries_read=None
        if any(r is None for r in reads)
        else sum(r for r in reads if r is not None),
        missing_group_on=tuple(missing_group),
        missing_streams=tuple(missing_streams),
    )


def _lag_age_ms(now_ms: int | None, state: GroupState, lag: Reading) -> int | None:
    """Lag in time on one stream: 0 with nothing unread, else the age of the first unread
    entry (None when it was not looked up, or its id's time is not a time)."""
    if lag.value == 0 and lag.exactness in (Exactness.EXACT, Exactness.CLAMPED):
        return 0
    if state.first_unread_id is None or now_ms is None:
        return None
    return entry_age_ms(state.first_unread_id, now_ms)


def _oldest(ages: list[int | None], *, partial: bool) -> Reading:
    """The largest of the streams' ages: a lower bound when some are missing (``partial``:
    streams not read or without the group; None: not known), unknown when all are."""
    known = [a for a in ages if a is not None]
    if not known:
        return Reading.unknown() if partial or ages else Reading.exact(0)
    exact = not partial and len(known) == len(ages)
    return Reading(max(known), Exactness.EXACT if exact else Exactness.LOWER_BOUND)
