"""When a burst on a group at one or more replicas is worth a poll before its next tick.

Between two polls only the streams' lengths are read (XLEN, one pipelined round trip per
endpoint every ``PROBE_INTERVAL``): cheap enough to do twice a second, and enough to tell
that a stream grew past what the current replicas absorb. The poll itself then measures and
decides as always (decisions/scaling.py): this only says when to take it early.

Rules:
- a group is followed only with autoscaling on, at 1..maxReplicas-1 replicas (at zero its
  waker wakes it; at the maximum there is nothing to scale up to), with a known backlog and
  a pollInterval longer than the probe's;
- busy (a backlog, or its streams grew since the poll before): probed at each probe tick;
- idle (no backlog, nothing added): not probed; the endpoint's blocking read (the waker)
  arms the probe on the first new entry, so an idle group costs no command of its own. Not
  on Redis Cluster: there the waker reads the keys of several hash slots without blocking,
  every 0.2 s, so an idle group is left to its polls (a busy one is still probed);
- an early poll is due when the backlog at the poll, plus what the streams grew since,
  minus what the replicas finished meanwhile, asks for more replicas than the group has
  (``recommend``, the scaling rule itself). What they finish: their measured rate, or at
  least what the group finished per second between its last two polls (a group that keeps
  up with a steady flow finishes what arrives: that flow is no burst);
- once per poll: the early poll's own result follows again from fresh numbers, so a group
  on the edge costs at most one extra poll per probe tick and never a loop without a sleep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from streamherd.api.consumergroup import Autoscaling
from streamherd.decisions.scaling import recommend
from streamherd.observations import Reading

PROBE_INTERVAL = 0.5
"""Seconds between two length probes of the busy groups of an endpoint."""
PROBE_KEYS = 64
"""A group on more streams than this (a wide pattern) is not probed: its regular polls."""


class Follow(StrEnum):
    NONE = "None"
    """Not followed between polls."""
    IDLE = "Idle"
    """Armed by the first new entry (the waker), then probed."""
    PROBE = "Probe"
    """Probed at every probe tick."""


@dataclass(frozen=True)
class Baseline:
    """What a poll said of a group, for its probes until the next poll."""

    lengths: Mapping[str, int]
    """XLEN of each of its streams at the poll (the streams that exist)."""
    backlog: int
    """lag + pending at the poll."""
    replicas: int
    rate_per_replica: float | None
    """Entries one replica finishes per second (None: not measured)."""
    taken_at: float
    """time.monotonic() of the poll."""
    throughput: float | None = None
    """Entries the group finished per second between its last two polls (None: unknown)."""


def follow(
    policy: Autoscaling,
    replicas: int,
    backlog: Reading,
    lengths: Mapping[str, int],
    before: Baseline | None,
    *,
    cluster: bool = False,
) -> Follow:
    """How to follow the group until its next poll (``before``: the last poll's baseline;
    ``cluster``: the endpoint is a Redis Cluster)."""
    if (
        not policy.enabled
        or replicas < 1
        or replicas >= policy.max_replicas
        or policy.poll_interval.seconds <= PROBE_INTERVAL
        or backlog.value is None
        or not lengths
        or len(lengths) > PROBE_KEYS
    ):
        return Follow.NONE
    if backlog.value > 0 or (before is not None and grown(before.lengths, lengths) > 0):
        return Follow.PROBE
    return Follow.NONE if cluster else Follow.IDLE


def grown(before: Mapping[str, int], now: Mapping[str, int | None]) -> int:
    """Entries added since ``before`` over the streams both know (a trimmed stream counts
    none: shrinking is not growth, so a capped stream is left to the regular polls)."""
    return sum(
        max(0, length - before[key])
        for key, length in now.items()
        if length is not None and key in before
    )


def early_poll_due(
    policy: Autoscaling, baseline: Baseline, lengths: Mapping[str, int | None], now: float
) -> bool:
    """Whether the streams grew, since the poll of ``baseline``, past what its replicas
    absorb: the scaling rule, on the backlog estimated from the lengths, wants more."""
    added = grown(baseline.lengths, lengths)
    if added == 0:
        return False
    rate = baseline.rate_per_replica
    absorbed = max(rate * baseline.replicas if rate else 0.0, baseline.throughput or 0.0)
    finished = absorbed * max(0.0, now - baseline.taken_at)
    estimate = max(0, round(baseline.backlog + added - finished))
    if estimate == 0:
        return False
    wanted, _ = recommend(policy, Reading.exact(estimate), rate, policy.metric)
    return wanted > baseline.replicas
