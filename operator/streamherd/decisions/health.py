"""Is a consumer group keeping up? Judged over a window of polls, the way Burrow judges Kafka
consumers: not by thresholds on one number (a backlog of 5,000 is fine for one group and a
disaster for another) but by how the backlog and the group's progress moved over the last
``window`` seconds. Pure: the ConsumerGroup loop feeds it one sample per poll and keeps the
bounded history it hands back.

The states, decided in this order:

- ``Unknown``: the backlog cannot be read now; or it is > 0 and the history does not cover
  the window yet (the operator just started: nothing to judge over); or what tells the states
  apart is not known (entries-read unknown and no other sign of progress; a backlog that is
  only a lower bound where its growth matters). Never OK on what could not be read.
- ``OK``: the backlog is 0 now, or was 0 at some poll of the window (the group caught up);
  or the autoscaler keeps the group at zero on purpose (its metric does not exceed
  ``activationThreshold``); or entries were delivered or acknowledged and the backlog fell
  at least once.
- ``Stopped``: backlog > 0 at every poll of the window and no live consumer at any of them.
  A scale-to-zero wake is not a stop: its pods have the whole window to come up.
- ``Stalled``: backlog > 0 at every poll of the window, consumers present at some poll, and
  nothing delivered (entries-read did not move) or acknowledged (entries-read - pending did
  not move) in the whole window.
- ``Lagging``: entries were delivered or acknowledged, but the backlog never fell from one
  poll to the next and ended the window higher than it began.

"Live consumers" are the Deployment's ready pods when the group has ``spec.consumers``;
without it, the consumers Redis knows (a crashed consumer's name stays there, so such a group
shows Stalled rather than Stopped). The janitor's hand-backs (re-queue: XACK of the original)
count as acknowledgements: they move work forward.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from streamherd.observations import Exactness, Reading

MAX_SAMPLES = 240
"""History kept per group, whatever the window and poll interval: samples closer together
than window / MAX_SAMPLES replace the newest one instead of adding to it."""


class HealthState(StrEnum):
    OK = "OK"
    LAGGING = "Lagging"
    STALLED = "Stalled"
    STOPPED = "Stopped"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of a group, as health needs it."""

    at: float
    """time.monotonic() of the poll."""
    backlog: Reading
    pending: int | None
    entries_read: int | None
    consumers: int | None
    """Consumers Redis knows in the group."""
    ready_replicas: int | None = None
    """Ready pods of the group's Deployment; None when the group has no ``spec.consumers``."""
    parked: bool = False
    """The autoscaler keeps the group at zero on purpose (desired replicas 0)."""

    @property
    def live(self) -> int:
        if self.ready_replicas is not None:
            return self.ready_replicas
        return self.consumers or 0


@dataclass(frozen=True)
class Health:
    state: HealthState
    message: str
    history: tuple[Sample, ...] = ()
    """What to pass back with the next sample."""


def judge(history: Sequence[Sample], sample: Sample, window: float) -> Health:
    """The group's health after ``sample``, given the ``history`` a previous call returned
    (in time order). ``window`` in seconds."""
    kept = remember(history, sample, window)
    span = _seconds(window)
    if sample.backlog.value is None:
        return Health(HealthState.UNKNOWN, "the backlog cannot be read: health is not known", kept)
    # No live numbers in the words: a condition message that changes with every poll would
    # be a status write with every poll (the numbers are in the status fields and metrics).
    if sample.backlog.value == 0:
        return Health(HealthState.OK, "no backlog", kept)
    if sample.parked:
        return Health(
            HealthState.OK,
            "a backlog, kept at zero replicas on purpose (the autoscaler's metric "
            "does not exceed activationThreshold)",
            kept,
        )
    start = sample.at - window
    if kept[0].at > start:
        return Health(
            HealthState.UNKNOWN,
            f"a backlog: judging over the first {span} of polls",
            kept,
        )
    anchor = max(i for i, s in enumerate(kept) if s.at <= start)
    seen = kept[anchor:]
    if any(s.backlog.value == 0 for s in seen):
        return Health(HealthState.OK, f"a backlog; it was 0 within the last {span}", kept)
    if all(s.live == 0 for s in seen):
        who = "ready pods" if sample.ready_replicas is not None else "consumers"
        return Health(
            HealthState.STOPPED,
            f"a backlog and no {who} for {span}: nothing consumes the group "
            "(is the Deployment at zero, crash-looping, or unschedulable?)",
            kept,
        )
    moved = _progress(seen)
    if moved is None:
        return Health(
            HealthState.UNKNOWN,
            "a backlog: entries-read is not known, and nothing else shows whether "
            f"entries were delivered or acknowledged in the last {span}",
            kept,
        )
    if not moved:
        return Health(
            HealthState.STALLED,
            f"a backlog: nothing delivered or acknowledged for {span} while "
            f"{sample.live} consumer(s) are present (stuck, or failing every entry?)",
            kept,
        )
    growth = _growing(seen)
    if growth is None:
        return Health(
            HealthState.UNKNOWN,
            "a backlog known only as a lower bound, so whether it grows over the "
            f"last {span} is not known",
            kept,
        )
    if growth:
        return Health(
            HealthState.LAGGING,
            f"the backlog grew over the last {span} and never fell, "
            "while consumers made progress: they do not keep up (more replicas, or faster "
            "consumers)",
            kept,
        )
    return Health(HealthState.OK, "a backlog; entries delivered and acknowledged", kept)


def remember(history: Sequence[Sample], sample: Sample, window: float) -> tuple[Sample, ...]:
    """The history after ``sample``: samples of the last ``window`` seconds plus the newest
    older one (so the window is covered), at most about MAX_SAMPLES of them. A sample whose
    backlog is unknown is not kept: it tells nothing about the window (the judgement of that
    poll is Unknown all the same)."""
    kept = list(history)
    if sample.backlog.value is None:
        return tuple(kept)
    kept = [s for s in kept if s.at < sample.at]  # a clock that went back: start over there
    if len(kept) >= 2 and kept[-1].at - kept[-2].at < window / MAX_SAMPLES:
        kept[-1] = sample  # the newest was still within a step of the one before: move it
    else:
        kept.append(sample)
    start = sample.at - window
    while len(kept) >= 2 and kept[1].at <= start:
        kept.pop(0)
    return tuple(kept)


def _progress(samples: Sequence[Sample]) -> bool | None:
    """Whether anything was delivered or acknowledged between the first and the last of
    ``samples``: True as soon as one step shows it; None when some step cannot tell and
    none shows it."""
    unknown = False
    for a, b in itertools.pairwise(samples):
        step = _step_progress(a, b)
        if step:
            return True
        unknown |= step is None
    return None if unknown else False


def _step_progress(a: Sample, b: Sample) -> bool | None:
    if (
        a.entries_read is not None
        and b.entries_read is not None
        and a.pending is not None
        and b.pending is not None
        and b.entries_read >= a.entries_read  # a sum over a pattern's streams drops when one goes
    ):
        delivered = b.entries_read > a.entries_read
        acked = b.entries_read - b.pending > a.entries_read - a.pending
        return delivered or acked
    # Without entries-read: fewer pending means acks, less lag means deliveries.
    if a.pending is not None and b.pending is not None and b.pending < a.pending:
        return True
    lag_a, lag_b = _lag(a), _lag(b)
    if lag_a is not None and lag_b is not None and lag_b < lag_a:
        return True
    return None


def _lag(s: Sample) -> int | None:
    if s.backlog.value is None or s.pending is None or s.backlog.exactness is not Exactness.EXACT:
        return None
    return s.backlog.value - s.pending


def _growing(samples: Sequence[Sample]) -> bool | None:
    """True when the backlog never fell between polls and ended higher than it began;
    False when it fell at least once (or stayed flat); None when lower bounds hide it."""
    unknown = False
    for a, b in itertools.pairwise(samples):
        fell = _less(b.backlog, a.backlog)
        if fell:
            return False
        if fell is None:
            unknown = True
    if unknown:
        return None
    return _less(samples[0].backlog, samples[-1].backlog)


def _less(a: Reading, b: Reading) -> bool | None:
    """a < b, when the readings say so: a lower bound's real value may be anything above it."""
    assert a.value is not None and b.value is not None
    a_bound = a.exactness is Exactness.LOWER_BOUND
    b_bound = b.exactness is Exactness.LOWER_BOUND
    if a.value < b.value:
        return None if a_bound else True
    if not b_bound:
        return False  # a >= a.value >= b.value = b
    return None  # b is a lower bound at or under a: it may be above


def _seconds(window: float) -> str:
    if window >= 60 and window % 60 == 0:
        return f"{window / 60:g}m"
    return f"{window:g}s"
