"""How fast a group gets through its work, from two observations."""

from __future__ import annotations

from streamherd.observations import GroupState


def completion_rate(
    before: GroupState | None, before_at: float, after: GroupState, after_at: float
) -> float | None:
    """Entries the group finished (delivered and acknowledged) per second between two polls.

    Finished = entries-read - pending: reading ahead into the PEL is not progress, acking
    is. None when it cannot be known: no earlier poll, no entries-read (Redis does not know
    it after a mid-stream SETID), no time between polls, or the group went backwards (it
    was recreated or moved with SETID).
    """
    if before is None or before.entries_read is None or after.entries_read is None:
        return None
    elapsed = after_at - before_at
    if elapsed <= 0:
        return None
    finished = (after.entries_read - after.pending) - (before.entries_read - before.pending)
    if after.entries_read < before.entries_read or finished < 0:
        return None
    return finished / elapsed
