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
    lag: int
    """Entries not delivered yet: consumers that leave some waiting are working flat out."""
    replicas: int
    """Ready consumer replicas at the poll."""

    @classmethod
    def of(cls, totals: GroupTotals, at: float, replicas: int = 1) -> Progress | None:
        """None when the poll cannot say (entries-read unknown after a mid-stream SETID, or
        the endpoint unreadable)."""
        if (
            totals.entries_read is None
            or totals.pending is None
            or totals.backlog.value is None
            or totals.lag.value is None
        ):
            return None
        return cls(
            at,
            totals.entries_read - totals.pending,
            totals.backlog.value,
            totals.lag.value,
            replicas,
        )


def completion_rate(before: Progress | None, after: Progress) -> float | None:
    """Entries one replica finished per second between two polls: what a replica can do,
    so measured only while the replicas were saturated and the same for the whole interval.
    Saturated: entries waited undelivered at both polls (a replica that keeps up finishes
    what arrives: the arrival rate, not its capacity; pending alone is work in flight). The
    same: as many ready replicas at both polls (a replica started in between spent part of
    it starting, which would count as slowness and ask for far too many). None when it
    cannot be known: no earlier poll, no time between them, not saturated, replicas changed,
    or the group went backwards (recreated, or moved with SETID)."""
    if (
        before is None
        or after.at <= before.at
        or before.lag == 0
        or after.lag == 0
        or before.replicas != after.replicas
        or after.replicas <= 0
    ):
        return None
    done = after.finished - before.finished
    if done < 0:
        return None
    return done / (after.at - before.at) / after.replicas


def smoothed(previous: float | None, measured: float) -> float:
    return measured if previous is None else SMOOTHING * measured + (1 - SMOOTHING) * previous
