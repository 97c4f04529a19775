"""How fast a group gets through its work, from two polls: what targetDrainTime scales on."""

from __future__ import annotations

from dataclasses import dataclass

from streamherd.decisions.totals import GroupTotals

SMOOTHING = 0.5
"""Weight of the newest measurement in the smoothed rate."""


@dataclass(frozen=True)
class Progress:
    """What one poll says of a group's work."""

    at: float
    """time.monotonic() of the poll."""
    finished: int
    """entries-read - pending: reading ahead into the PEL is not progress, acking is."""
    backlog: int

    @classmethod
    def of(cls, totals: GroupTotals, at: float) -> Progress | None:
        """None when the poll cannot say (entries-read unknown after a mid-stream SETID, or
        the endpoint unreadable)."""
        if totals.entries_read is None or totals.pending is None or totals.backlog.value is None:
            return None
        return cls(at, totals.entries_read - totals.pending, totals.backlog.value)


def completion_rate(before: Progress | None, after: Progress) -> float | None:
    """Entries the group finished per second between two polls, measured only while there
    was work at both (an idle group's rate is the arrival rate, not what its consumers can
    do). None when it cannot be known: no earlier poll, no time between them, no work, or
    the group went backwards (recreated, or moved with SETID)."""
    if before is None or after.at <= before.at or before.backlog == 0 or after.backlog == 0:
        return None
    done = after.finished - before.finished
    if done < 0:
        return None
    return done / (after.at - before.at)


def smoothed(previous: float | None, measured: float) -> float:
    return measured if previous is None else SMOOTHING * measured + (1 - SMOOTHING) * previous
