"""How many entries a group has not yet been delivered, and how sure we are.

Redis reports ``lag`` in XINFO GROUPS, but (redis-streams.md):
- it is null after a mid-stream create/SETID without ENTRIESREAD, or when an XDEL
  tombstone lies after last-delivered-id: then we count (bounded) instead;
- on 7.x it can stay > 0 after XDEL/trim ahead of the group (redis/redis #13337, #13473):
  a group at the tail has lag 0, and no group lags by more than the stream holds.
"""

from __future__ import annotations

from streamherd.observations import Exactness, GroupState, Reading, StreamState


def effective_lag(
    *,
    reported: int | None,
    counted: int | None,
    count_cap: int,
    length: int,
    at_tail: bool | None,
    counted_bound: bool = False,
) -> Reading:
    """The group's lag.

    reported: XINFO GROUPS lag (None when Redis says null).
    counted: entries after last-delivered-id counted with XRANGE ... COUNT count_cap
        (only when reported is None); ``counted_bound``: the count stopped before the end
        (the cap, or the script's budget): a lower bound even below the cap.
    length: XLEN. at_tail: whether no entry lies after the group's last-delivered-id,
        when Redis may report a stale lag (7.x); None when not checked.
    """
    if reported is None:
        if counted is None:
            return Reading.unknown()
        if counted_bound or counted >= count_cap:
            return Reading(counted, Exactness.LOWER_BOUND)
        return Reading.exact(counted)
    if reported == 0:
        return Reading.exact(0)
    if at_tail:
        return Reading(0, Exactness.CLAMPED)  # nothing after the group: a stale 7.x lag
    if reported > length:
        return Reading(length, Exactness.CLAMPED)
    return Reading.exact(reported)


def group_lag(stream: StreamState, group: GroupState, count_cap: int) -> Reading:
    """The lag of ``group`` on ``stream`` from what one poll read (``count_cap``: the poll's
    ``lag_count_cap``): ``effective_lag``, with its common case (a lag Redis reported within
    the stream, no stale-lag sign) answered first, from shared Readings."""
    reported, length = group.reported_lag, stream.length or 0
    if reported is not None and 0 <= reported <= length and not group.at_tail:
        return _EXACT[reported] if reported < _SHARED else Reading(reported, Exactness.EXACT)
    return effective_lag(
        reported=reported,
        counted=group.counted_lag,
        count_cap=count_cap,
        length=length,
        at_tail=group.at_tail,
        counted_bound=group.counted_lag_bound,
    )


# Readings are immutable: the common small exact lags are shared, not built 10,000 times a poll.
_SHARED = 1024
_EXACT = [Reading(i, Exactness.EXACT) for i in range(_SHARED)]
