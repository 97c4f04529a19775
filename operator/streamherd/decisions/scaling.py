"""How many consumer replicas a group should have: a pure function of what was observed,
the spec, and a small memory of recent recommendations.

Rules (README, "Autoscaling"):
- replicas = ceil(metric / targetPerReplica); or, with targetDrainTime and a measured rate,
  enough replicas to drain the metric within that time; clamped to [min, max];
- from zero: wake when the backlog (lag + pending) exceeds activationThreshold;
- scale-up: the lowest recommendation of the scale-up window (0s: immediate), at most
  maxStep more per decision; scale-down: the highest recommendation of the scale-down
  window, at most maxStep fewer per decision;
- one to zero: only after the backlog has been known to be zero for idleBeforeZero (a lower
  bound of zero, or an unreadable stream, restarts that clock);
- unknown metric: hold (never scale down on what could not be read); a lower bound may
  scale up, never down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from streamherd.api.consumergroup import Autoscaling, Metric
from streamherd.observations import Exactness, HasBacklog, Reading


class Action(StrEnum):
    HOLD = "Hold"
    SCALE_UP = "ScaledUp"
    SCALE_DOWN = "ScaledDown"
    WAKE = "WokeUp"
    TO_ZERO = "ScaledToZero"
    UNKNOWN = "MetricUnknown"


@dataclass(frozen=True)
class Observed(HasBacklog):
    """What the autoscaler sees in one poll."""

    replicas: int
    """The Deployment's desired replicas now (spec.replicas)."""
    lag: Reading
    pending: int | None
    rate_per_replica: float | None = None
    """Entries one replica finishes per second, measured while there was work."""
    pending_exactness: Exactness = Exactness.EXACT
    """LowerBound when some of the group's streams could not be read."""

    def metric(self, which: Metric) -> Reading:
        if which is Metric.LAG:
            return self.lag
        if which is Metric.PENDING:
            return self.pending_reading
        return self.backlog


@dataclass(frozen=True)
class Memory:
    """What the autoscaler remembers between polls."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, replicas) recommended within the longest window."""
    idle_since: float | None = None
    """Since when the backlog has been known to be zero."""


@dataclass(frozen=True)
class Decision:
    desired: int
    action: Action
    reason: str
    """In words, for status and Events: "backlog 4200 > 6 replicas x 500"."""
    memory: Memory = field(default_factory=Memory)


def recommend(
    policy: Autoscaling, metric: Reading, rate_per_replica: float | None, which: Metric
) -> tuple[int, str]:
    """Replicas the metric alone asks for, clamped to [min, max] (at least 1 with work),
    and why in words."""
    assert metric.value is not None
    value, name, shown = metric.value, str(which).lower(), metric.display()
    if value == 0:
        floor = f", minReplicas {policy.min_replicas}" if policy.min_replicas else ""
        return policy.min_replicas, f"{name} 0{floor}"
    if policy.target_drain_time is not None and rate_per_replica and rate_per_replica > 0:
        seconds = policy.target_drain_time.seconds
        raw = math.ceil(value / (rate_per_replica * seconds))
        why = f"{name} {shown} drains within {policy.target_drain_time} at {rate_per_replica:.1f}/s per replica with {raw}"
    else:
        raw = math.ceil(value / policy.target_per_replica)
        why = f"{name} {shown} needs {raw} replicas x {policy.target_per_replica}"
    wanted = min(max(raw, policy.min_replicas, 1), policy.max_replicas)
    if wanted != raw:
        why += f" (limits {policy.min_replicas}..{policy.max_replicas})"
    return wanted, why


def decide(policy: Autoscaling, observed: Observed, memory: Memory, now: float) -> Decision:
    """The replicas for this poll: hold on an unknown metric; from zero, wake on work; to
    zero only after idleBeforeZero; otherwise the recommendation, stabilized and stepped."""
    current = observed.replicas
    metric, backlog = observed.metric(policy.metric), observed.backlog
    if metric.value is None or backlog.value is None:
        return _hold_unknown(policy, current, memory)
    idle_since = _idle_since(memory, backlog, now)
    if current == 0 and policy.min_replicas == 0:
        return _from_zero(policy, observed, Memory(memory.recommendations, idle_since), now)
    wanted, why = recommend(policy, metric, observed.rate_per_replica, policy.metric)
    if wanted == 0:  # min 0 and nothing to do: zero only after idleBeforeZero
        idle_for = now - idle_since if idle_since is not None else 0.0
        if idle_since is not None and idle_for >= policy.idle_before_zero.seconds:
            return _to_zero(policy, current, Memory(memory.recommendations, idle_since), now)
        wanted = 1
        if idle_since is None:  # a zero that is only a lower bound: nothing known yet
            why = f"backlog {backlog.display()} is only a lower bound: not going to zero"
        else:
            why = f"backlog 0 for {idle_for:.0f}s, zero after {policy.idle_before_zero}"
    history = _remember(memory.recommendations, now, wanted, policy)
    desired, action, why = _stabilized(policy, history, now, current, wanted, metric, why)
    desired, action = _within_limits(policy, current, desired, action)
    return Decision(desired, action, why, Memory(history, idle_since))


def _clamped(policy: Autoscaling, replicas: int) -> int:
    return min(max(replicas, policy.min_replicas), policy.max_replicas)


def _hold_unknown(policy: Autoscaling, current: int, memory: Memory) -> Decision:
    """Never scale on what could not be read; the idle clock starts over."""
    held = _clamped(policy, current)
    return Decision(
        held,
        Action.UNKNOWN,
        f"{str(policy.metric).lower()} unknown: holding {held} replicas",
        replace(memory, idle_since=None),
    )


def _idle_since(memory: Memory, backlog: Reading, now: float) -> float | None:
    """Since when the backlog has been known to be zero (now, if it just became so); None
    with work, and with a zero that is only a lower bound (a stream of the group could not
    be read, or lacks the group yet): that restarts the idle clock, never advances it."""
    if backlog.value != 0 or backlog.exactness not in (Exactness.EXACT, Exactness.CLAMPED):
        return None
    return memory.idle_since if memory.idle_since is not None else now


def _from_zero(policy: Autoscaling, observed: Observed, memory: Memory, now: float) -> Decision:
    """At zero replicas: stay there until the backlog exceeds activationThreshold, then wake
    to what the metric asks for (at least one, at most maxStep)."""
    backlog = observed.backlog
    assert backlog.value is not None
    if backlog.value <= policy.activation_threshold:
        return Decision(0, Action.HOLD, f"idle at zero: backlog {backlog.display()}", memory)
    metric = observed.metric(policy.metric)
    wanted, why = recommend(policy, metric, observed.rate_per_replica, policy.metric)
    desired = _step(max(wanted, 1), 0, policy.scale_up.max_step)
    return Decision(
        desired,
        Action.WAKE,
        f"backlog {backlog.display()} > activation {policy.activation_threshold}; {why}",
        Memory(_remember(memory.recommendations, now, desired, policy), memory.idle_since),
    )


def _to_zero(policy: Autoscaling, current: int, memory: Memory, now: float) -> Decision:
    """Idle for idleBeforeZero: towards zero, at most maxStep fewer."""
    desired = _step(0, current, policy.scale_down.max_step)
    return Decision(
        desired,
        Action.TO_ZERO if desired == 0 else Action.SCALE_DOWN,
        f"backlog 0 for {policy.idle_before_zero}: going to zero",
        Memory(_remember(memory.recommendations, now, 0, policy), memory.idle_since),
    )


def _stabilized(
    policy: Autoscaling,
    history: Sequence[tuple[float, int]],
    now: float,
    current: int,
    wanted: int,
    metric: Reading,
    why: str,
) -> tuple[int, Action, str]:
    """Up: the lowest recommendation of the scale-up window; down: the highest of the
    scale-down window, and never on a lower bound; each at most maxStep from ``current``."""
    if wanted > current:
        up = policy.scale_up
        window = [n for t, n in history if t >= now - up.stabilization_window.seconds]
        desired = _step(max(min(window), current), current, up.max_step)
        return desired, Action.SCALE_UP if desired > current else Action.HOLD, why
    if wanted < current:
        if metric.exactness is Exactness.LOWER_BOUND:
            return (
                _clamped(policy, current),
                Action.HOLD,
                why + "; only a lower bound: not scaling down",
            )
        down = policy.scale_down
        window = [n for t, n in history if t >= now - down.stabilization_window.seconds]
        target = max(window)
        desired = _step(min(target, current), current, down.max_step)
        if target > wanted:
            why += f"; {target} recommended within the last {down.stabilization_window}"
        return desired, Action.SCALE_DOWN if desired < current else Action.HOLD, why
    return current, Action.HOLD, why


def _within_limits(
    policy: Autoscaling, current: int, desired: int, action: Action
) -> tuple[int, Action]:
    """Clamped to [min, max]: a spec change may move replicas where the metric would not."""
    desired = _clamped(policy, desired)
    if action is Action.HOLD and desired != current:
        action = Action.SCALE_UP if desired > current else Action.SCALE_DOWN
    return desired, action


def _step(target: int, current: int, max_step: int | None) -> int:
    if max_step is None:
        return target
    return min(target, current + max_step) if target > current else max(target, current - max_step)


def _remember(
    history: Sequence[tuple[float, int]], now: float, replicas: int, policy: Autoscaling
) -> tuple[tuple[float, int], ...]:
    keep = max(
        policy.scale_up.stabilization_window.seconds, policy.scale_down.stabilization_window.seconds
    )
    return (*((t, n) for t, n in history if t >= now - keep), (now, replicas))
