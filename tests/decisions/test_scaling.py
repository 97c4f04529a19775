"""The scaling policy: examples first, then properties over random histories."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamherd.api.consumergroup import Autoscaling
from streamherd.decisions.scaling import Action, Decision, Memory, Observed, decide
from streamherd.observations import Exactness, Reading


def policy(**spec: Any) -> Autoscaling:
    spec.setdefault("scaleDown", {"stabilizationWindow": "0s"})
    return Autoscaling.model_validate(spec)


def seen(
    replicas: int,
    lag: int | None = 0,
    pending: int | None = 0,
    exactness: Exactness = Exactness.EXACT,
    rate: float | None = None,
    pending_exactness: Exactness = Exactness.EXACT,
) -> Observed:
    reading = Reading.unknown() if lag is None else Reading(lag, exactness)
    return Observed(
        replicas=replicas,
        lag=reading,
        pending=pending,
        rate_per_replica=rate,
        pending_exactness=pending_exactness,
    )


def run(
    p: Autoscaling, steps: list[tuple[float, Observed]], memory: Memory | None = None
) -> list[Decision]:
    """Feed observations in time order; replicas follow the decisions unless the
    observation fixes them (tests of one step)."""
    memory = memory or Memory()
    out = []
    for now, observed in steps:
        decision = decide(p, observed, memory, now)
        memory = decision.memory
        out.append(decision)
    return out


# ------------------------------------------------------------------ replicas from the metric


def test_backlog_over_target_per_replica() -> None:
    d = decide(
        policy(targetPerReplica=500, maxReplicas=20), seen(1, lag=4000, pending=200), Memory(), 0
    )
    assert d.desired == 9 and d.action is Action.SCALE_UP
    assert "backlog 4200 needs 9 replicas x 500" in d.reason


@pytest.mark.parametrize(("metric", "expected"), [("Backlog", 5), ("Pending", 2), ("Lag", 3)])
def test_the_chosen_metric_decides(metric: str, expected: int) -> None:
    d = decide(
        policy(metric=metric, targetPerReplica=100), seen(1, lag=300, pending=200), Memory(), 0
    )
    assert d.desired == expected


def test_clamped_to_max_and_min() -> None:
    assert (
        decide(policy(maxReplicas=4, targetPerReplica=1), seen(1, lag=100), Memory(), 0).desired
        == 4
    )
    d = decide(policy(minReplicas=3, targetPerReplica=100), seen(3, lag=50), Memory(), 0)
    assert d.desired == 3


def test_drain_time_uses_the_measured_rate() -> None:
    p = policy(targetDrainTime="2s", targetPerReplica=10_000, maxReplicas=50)
    d = decide(p, seen(2, lag=1000, rate=50.0), Memory(), 0)
    assert d.desired == 10  # 1000 entries / (50 per second x 2 s) per replica
    assert "drains within 2s at 50.0/s per replica" in d.reason


def test_drain_time_falls_back_to_target_until_a_rate_is_known() -> None:
    p = policy(targetDrainTime="2s", targetPerReplica=100)
    assert decide(p, seen(1, lag=1000), Memory(), 0).desired == 10
    assert decide(p, seen(1, lag=1000, rate=0.0), Memory(), 0).desired == 10


# ------------------------------------------------------------------ zero


def test_the_first_message_wakes_a_group_at_zero() -> None:
    d = decide(policy(), seen(0, lag=1), Memory(), 0)
    assert d.desired == 1 and d.action is Action.WAKE


def test_pending_alone_wakes_too() -> None:
    assert decide(policy(), seen(0, lag=0, pending=1), Memory(), 0).desired == 1


def test_activation_threshold_keeps_small_backlogs_asleep() -> None:
    p = policy(activationThreshold=10)
    assert decide(p, seen(0, lag=10), Memory(), 0).desired == 0
    assert decide(p, seen(0, lag=11), Memory(), 0).desired == 1


def test_a_big_backlog_wakes_straight_to_many() -> None:
    assert decide(policy(targetPerReplica=100), seen(0, lag=750), Memory(), 0).desired == 8


def test_one_goes_to_zero_only_after_idle_before_zero() -> None:
    p = policy(idleBeforeZero="60s")
    out = run(p, [(0, seen(1)), (30, seen(1)), (59.9, seen(1)), (60, seen(1))])
    assert [d.desired for d in out] == [1, 1, 1, 0]
    assert out[-1].action is Action.TO_ZERO


def test_any_work_resets_the_idle_clock() -> None:
    p = policy(idleBeforeZero="60s")
    out = run(
        p, [(0, seen(1)), (50, seen(1, lag=1)), (100, seen(1)), (150, seen(1)), (160, seen(1))]
    )
    assert [d.desired for d in out] == [1, 1, 1, 1, 0], "idle again since 100: zero at 160, not 60"


def test_min_replicas_above_zero_never_goes_to_zero() -> None:
    out = run(policy(minReplicas=1, idleBeforeZero="1s"), [(0, seen(1)), (100, seen(1))])
    assert [d.desired for d in out] == [1, 1]


# ------------------------------------------------------------------ unknown is not zero


def test_unknown_metric_holds_and_says_so() -> None:
    d = decide(policy(), seen(3, lag=None), Memory(), 0)
    assert d.desired == 3 and d.action is Action.UNKNOWN and "unknown: holding 3" in d.reason
    assert decide(policy(), seen(0, lag=None), Memory(), 0).desired == 0


def test_unknown_pending_is_unknown_backlog() -> None:
    assert decide(policy(), seen(4, lag=0, pending=None), Memory(), 0).desired == 4


def test_unknown_resets_the_idle_clock() -> None:
    p = policy(idleBeforeZero="60s")
    out = run(p, [(0, seen(1)), (30, seen(1, lag=None)), (70, seen(1)), (100, seen(1))])
    assert [d.desired for d in out] == [1, 1, 1, 1], "idle must be seen, not assumed"


def test_a_lower_bound_scales_up_but_never_down() -> None:
    p = policy(targetPerReplica=100, maxReplicas=50)
    assert decide(p, seen(2, lag=1000, exactness=Exactness.LOWER_BOUND), Memory(), 0).desired == 10
    d = decide(p, seen(20, lag=1000, exactness=Exactness.LOWER_BOUND), Memory(), 0)
    assert d.desired == 20 and "lower bound" in d.reason


@pytest.mark.parametrize(
    "lower",
    [
        seen(1, lag=0, exactness=Exactness.LOWER_BOUND),  # a stream without the group yet
        seen(1, lag=0, pending=0, pending_exactness=Exactness.LOWER_BOUND),  # one unreadable
    ],
    ids=["lag>=0", "pending>=0"],
)
@pytest.mark.parametrize("metric", ["Backlog", "Pending", "Lag"])
def test_a_lower_bound_of_zero_never_scales_to_zero(lower: Observed, metric: str) -> None:
    """Issue 10: lag >=0 (some streams of a pattern unreadable or without the group) went to
    ScaledToZero after idleBeforeZero. Zero needs an exact zero."""
    p = policy(idleBeforeZero="60s", metric=metric)
    out = run(p, [(t, lower) for t in range(0, 300, 10)])
    assert {d.desired for d in out} == {1}, [d.reason for d in out]
    assert "lower bound" in out[-1].reason


def test_a_lower_bound_restarts_the_idle_clock() -> None:
    p = policy(idleBeforeZero="60s")
    lower = seen(1, lag=0, exactness=Exactness.LOWER_BOUND)
    out = run(p, [(0, seen(1)), (50, lower), (55, seen(1)), (110, seen(1)), (115, seen(1))])
    assert [d.desired for d in out] == [1, 1, 1, 1, 0], "idle again since 55: zero at 115"
    assert out[-1].action is Action.TO_ZERO


def test_a_clamped_zero_is_a_known_zero() -> None:
    """Clamped: Redis 7.x reported a stale lag and nothing lies after the group: truly 0."""
    p = policy(idleBeforeZero="60s")
    clamped = seen(1, lag=0, exactness=Exactness.CLAMPED)
    assert [d.desired for d in run(p, [(0, clamped), (60, clamped)])] == [1, 0]


# ------------------------------------------------------------------ windows and steps


def test_scale_up_is_immediate_by_default() -> None:
    assert decide(Autoscaling(), seen(1, lag=1000), Memory(), 0).desired == 10


def test_scale_down_takes_the_highest_recommendation_of_the_window() -> None:
    p = policy(targetPerReplica=100, maxReplicas=20, scaleDown={"stabilizationWindow": "30s"})
    steps = [
        (0, seen(1, lag=1000)),
        (10, seen(10, lag=200)),
        (20, seen(10, lag=100)),
        (35, seen(10, lag=100)),
        (41, seen(2, lag=100)),
    ]
    out = run(p, steps)
    # t=35: the window (5..35) still holds 2 (t=10); t=41: it holds only 1s
    assert [d.desired for d in out] == [10, 10, 10, 2, 1]


def test_scale_up_window_takes_the_lowest() -> None:
    p = policy(targetPerReplica=100, maxReplicas=20, scaleUp={"stabilizationWindow": "10s"})
    out = run(p, [(0, seen(1, lag=100)), (5, seen(1, lag=1000)), (11, seen(1, lag=1000))])
    assert [d.desired for d in out] == [1, 1, 10]


def test_step_limits_both_ways() -> None:
    p = policy(
        targetPerReplica=1,
        maxReplicas=100,
        scaleUp={"maxStep": 4},
        scaleDown={"stabilizationWindow": "0s", "maxStep": 2},
    )
    assert decide(p, seen(1, lag=50), Memory(), 0).desired == 5
    assert decide(p, seen(10, lag=1), Memory(), 0).desired == 8


def test_no_flapping_under_an_oscillating_metric() -> None:
    p = policy(targetPerReplica=100, maxReplicas=20, scaleDown={"stabilizationWindow": "30s"})
    replicas, seen_replicas = 1, []
    memory = Memory()
    for tick in range(40):  # every 2 s: 1500, 100, 1500, 100, ...
        d = decide(p, seen(replicas, lag=1500 if tick % 2 == 0 else 100), memory, tick * 2.0)
        memory, replicas = d.memory, d.desired
        seen_replicas.append(replicas)
    assert seen_replicas[0] == 15 and set(seen_replicas) == {15}


# ------------------------------------------------------------------ properties

readings = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 100_000), st.sampled_from(list(Exactness)[:3])),
    st.tuples(st.just(0), st.sampled_from(list(Exactness)[:3])),  # zero, of each strength
)


@st.composite
def policies(draw: st.DrawFn) -> Autoscaling:
    lo = draw(st.integers(0, 5))
    return policy(
        minReplicas=lo,
        maxReplicas=draw(st.integers(max(lo, 1), 30)),
        targetPerReplica=draw(st.integers(1, 2000)),
        activationThreshold=draw(st.integers(0, 50)),
        metric=draw(st.sampled_from(["Backlog", "Pending", "Lag"])),
        idleBeforeZero=f"{draw(st.integers(0, 120))}s",
        scaleUp={
            "stabilizationWindow": f"{draw(st.integers(0, 30))}s",
            **({"maxStep": s} if (s := draw(st.integers(0, 5))) else {}),
        },
        scaleDown={
            "stabilizationWindow": f"{draw(st.integers(0, 60))}s",
            **({"maxStep": s} if (s := draw(st.integers(0, 5))) else {}),
        },
    )


@settings(max_examples=300, deadline=None)
@given(
    policies(),
    st.integers(0, 40),
    st.lists(
        st.tuples(readings, st.one_of(st.none(), st.integers(0, 5000))), min_size=1, max_size=30
    ),
)
def test_never_outside_limits_and_never_down_on_unknown(
    p: Autoscaling, start: int, history: list[Any]
) -> None:
    replicas, memory = start, Memory()
    for tick, (lag, pending) in enumerate(history):
        observed = seen(
            replicas,
            lag=None if lag is None else lag[0],
            pending=pending,
            exactness=lag[1] if lag else Exactness.EXACT,
        )
        d = decide(p, observed, memory, tick * 2.0)
        assert p.min_replicas <= d.desired <= p.max_replicas, d
        if observed.metric(p.metric).value is None or observed.backlog.value is None:
            assert d.desired >= min(replicas, p.max_replicas), "scaled down on unknown"
        elif observed.metric(p.metric).exactness is Exactness.LOWER_BOUND:
            assert d.desired >= min(replicas, p.max_replicas), "scaled down on a lower bound"
        if replicas == 0 and (observed.backlog.value or 0) > p.activation_threshold:
            assert d.desired >= 1, "work at zero must wake the group"
        memory, replicas = d.memory, d.desired


ZERO = (0, Exactness.EXACT, 0, Exactness.EXACT)
KINDS_OF_ZERO = [
    ZERO,
    ZERO,
    ZERO,  # mostly exact zeros, so runs of them long enough to reach idleBeforeZero occur
    (0, Exactness.CLAMPED, 0, Exactness.EXACT),
    (0, Exactness.LOWER_BOUND, 0, Exactness.EXACT),  # a stream without the group yet
    (0, Exactness.EXACT, 0, Exactness.LOWER_BOUND),  # a stream that could not be read
    (3, Exactness.EXACT, 0, Exactness.EXACT),  # work
    (None, Exactness.UNKNOWN, 0, Exactness.EXACT),  # unknown
]


@settings(max_examples=500, deadline=None)
@given(
    policies(),
    st.integers(1, 10),
    st.lists(
        st.tuples(st.floats(0.1, 30), st.sampled_from(KINDS_OF_ZERO)), min_size=1, max_size=40
    ),
)
def test_zero_only_after_idle_before_zero_of_known_zeros(
    p: Autoscaling, start: int, history: list[Any]
) -> None:
    """Whatever was observed: a step to zero replicas happens only when every observation of
    the last idleBeforeZero showed a backlog known to be zero (exact or clamped)."""
    p = p.model_copy(update={"min_replicas": 0})
    replicas, memory, now = start, Memory(), 0.0
    known_zero_since: float | None = None
    for dt, (lag, exactness, pending, pending_exactness) in history:
        now += dt
        observed = seen(replicas, lag, pending, exactness, pending_exactness=pending_exactness)
        backlog = observed.backlog
        known_zero = backlog.value == 0 and backlog.exactness in (
            Exactness.EXACT,
            Exactness.CLAMPED,
        )
        if not known_zero:
            known_zero_since = None
        elif known_zero_since is None:
            known_zero_since = now
        d = decide(p, observed, memory, now)
        if d.desired == 0 and replicas > 0:
            assert known_zero_since is not None, f"to zero on {backlog}: {d.reason}"
            assert now - known_zero_since >= p.idle_before_zero.seconds, d.reason
        memory, replicas = d.memory, d.desired
