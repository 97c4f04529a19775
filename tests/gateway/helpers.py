"""What the operator makes of an observation, for tests that check it against real Redis."""

from __future__ import annotations

import redis.asyncio as aredis

from streamherd.decisions.lag import group_lag
from streamherd.observations import Observation, Reading


def lag_of(observed: Observation, key: str, group: str) -> Reading:
    """The group's lag as the operator decides it from one poll (decisions.lag)."""
    state = observed.group(key, group)
    assert state is not None, f"group {group!r} not observed on {key!r}"
    return group_lag(observed.streams[key], state, observed.lag_count_cap)


async def command_calls(r: aredis.Redis, command: str) -> int:
    """How many times the server has run ``command`` (lower case, e.g. "xrange"), a script's
    own calls included (INFO commandstats)."""
    stats = await r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
