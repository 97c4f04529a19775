"""When a burst is worth an early poll: every rule of decisions/bursts.py, then properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamherd.api.consumergroup import Autoscaling
from streamherd.decisions.bursts import (
    PROBE_KEYS,
    Baseline,
    Follow,
    early_poll_due,
    follow,
    grown,
)
from streamherd.decisions.scaling import recommend
from streamherd.observations import Reading


def policy(**spec: Any) -> Autoscaling:
    spec.setdefault("minReplicas", 1)
    spec.setdefault("maxReplicas", 10)
    spec.setdefault("targetPerReplica", 100)
    return Autoscaling.model_validate(spec)


def base(
    backlog: int = 0,
    replicas: int = 1,
    lengths: dict[str, int] | None = None,
    rate: float | None = None,
    at: float = 100.0,
) -> Baseline:
    return Baseline(lengths or {"s": 1000}, backlog, replicas, rate, at)


# follow: who is probed, who waits for the waker, who is left to the polls


def test_an_idle_group_waits_for_the_waker() -> None:
    assert follow(policy(), 1, Reading.exact(0), {"s": 5}, base(lengths={"s": 5})) is Follow.IDLE
    assert follow(policy(), 1, Reading.exact(0), {"s": 5}, None) is Follow.IDLE


def test_on_redis_cluster_an_idle_group_is_left_to_its_polls_a_busy_one_probed() -> None:
    # Its waker reads several slots without blocking, every 0.2 s: no idle watch there.
    idle = follow(policy(), 1, Reading.exact(0), {"s": 5}, None, cluster=True)
    assert idle is Follow.NONE
    assert follow(policy(), 1, Reading.exact(3), {"s": 5}, None, cluster=True) is Follow.PROBE


def test_a_backlog_or_growth_is_probed() -> None:
    assert follow(policy(), 1, Reading.exact(3), {"s": 5}, None) is Follow.PROBE
    grew = follow(policy(), 2, Reading.exact(0), {"s": 9}, base(lengths={"s": 5}))
    assert grew is Follow.PROBE, "kept up with, but written to: busy"


@pytest.mark.parametrize(
    ("p", "replicas", "backlog", "lengths", "why"),
    [
        (policy(enabled=False), 1, Reading.exact(5), {"s": 1}, "autoscaling off"),
        (policy(minReplicas=0), 0, Reading.exact(5), {"s": 1}, "at zero: the waker's"),
        (policy(maxReplicas=3), 3, Reading.exact(500), {"s": 1}, "at the maximum"),
        (policy(pollInterval="500ms"), 1, Reading.exact(5), {"s": 1}, "polled as often"),
        (policy(pollInterval="200ms"), 1, Reading.exact(5), {"s": 1}, "polled faster"),
        (policy(), 1, Reading.unknown(), {"s": 1}, "backlog unknown"),
        (policy(), 1, Reading.exact(5), {}, "no stream exists"),
        (
            policy(),
            1,
            Reading.exact(5),
            {f"k{i}": 1 for i in range(PROBE_KEYS + 1)},
            "too many streams",
        ),
    ],
)
def test_not_followed(
    p: Autoscaling, replicas: int, backlog: Reading, lengths: dict[str, int], why: str
) -> None:
    assert follow(p, replicas, backlog, lengths, None) is Follow.NONE, why


# grown


def test_growth_counts_only_streams_known_at_both_and_never_shrinking() -> None:
    assert grown({"a": 10, "b": 5}, {"a": 15, "b": 5}) == 5
    assert grown({"a": 10, "b": 5}, {"a": 8, "b": 7}) == 2, "a trimmed stream adds nothing"
    assert grown({"a": 10}, {"a": None, "new": 50}) == 0, "unread or unknown: nothing"


# early_poll_due


def test_a_burst_past_one_replicas_share_is_due() -> None:
    assert early_poll_due(policy(), base(), {"s": 1000 + 10_000}, 100.5)


def test_no_growth_is_never_due_even_with_a_large_backlog() -> None:
    assert not early_poll_due(policy(), base(backlog=5000), {"s": 1000}, 100.5), (
        "the poll already saw that backlog and decided on it"
    )


def test_growth_within_what_the_replicas_absorb_is_not_due() -> None:
    assert not early_poll_due(policy(), base(backlog=50, replicas=1), {"s": 1040}, 100.5)
    assert early_poll_due(policy(), base(backlog=50, replicas=1), {"s": 1060}, 100.5)
    assert not early_poll_due(policy(), base(backlog=150, replicas=2), {"s": 1050}, 100.5)


def test_what_the_replicas_finished_meanwhile_is_taken_off() -> None:
    # 2 replicas x 100/s for 1 s finish 200: 150 + 200 added - 200 = 150 <= 2 x 100.
    steady = base(backlog=150, replicas=2, rate=100.0, at=100.0)
    assert not early_poll_due(policy(), steady, {"s": 1200}, 101.0)
    assert early_poll_due(policy(), steady, {"s": 1200}, 100.2), "not yet finished: due"


def test_at_the_maximum_nothing_is_due() -> None:
    assert not early_poll_due(policy(maxReplicas=1), base(), {"s": 100_000}, 100.5)


def test_the_drain_time_rule_is_the_one_applied() -> None:
    # 200/s per replica, drain within 10 s: one replica takes 2000.
    p = policy(targetDrainTime="10s")
    assert not early_poll_due(p, base(rate=200.0, at=100.0), {"s": 1000 + 1500}, 100.0)
    assert early_poll_due(p, base(rate=200.0, at=100.0), {"s": 1000 + 2500}, 100.0)


@given(
    backlog=st.integers(0, 10_000),
    replicas=st.integers(1, 20),
    before=st.integers(0, 10_000),
    added=st.integers(-1000, 10_000),
    rate=st.one_of(st.none(), st.floats(0.1, 1000)),
    throughput=st.one_of(st.none(), st.floats(0, 1000)),
    elapsed=st.floats(0, 10),
)
def test_due_exactly_when_the_scaling_rule_would_want_more(
    backlog: int,
    replicas: int,
    before: int,
    added: int,
    rate: float | None,
    throughput: float | None,
    elapsed: float,
) -> None:
    p = policy(maxReplicas=20)
    b = Baseline({"s": before}, backlog, replicas, rate, 0.0, throughput)
    due = early_poll_due(p, b, {"s": max(0, before + added)}, elapsed)
    if added <= 0:
        assert not due, "nothing added: the last poll's decision stands"
        return
    absorbed = max(rate * replicas if rate else 0.0, throughput or 0.0)
    estimate = max(0, round(backlog + added - absorbed * elapsed))
    wanted = recommend(p, Reading.exact(estimate), rate, p.metric)[0] if estimate else 0
    assert due == (wanted > replicas)
    if due:
        # More added never makes it less due.
        assert early_poll_due(p, b, {"s": before + added + 1}, elapsed)


def test_a_steady_flow_the_group_keeps_up_with_is_no_burst() -> None:
    # 100/s arrive and were finished between the last two polls: 150 more after 1.5 s is
    # that flow, not a burst; 2,000 more is one.
    kept_up = Baseline({"s": 1000}, 0, 1, None, 100.0, throughput=100.0)
    assert not early_poll_due(policy(), kept_up, {"s": 1150}, 101.5)
    assert early_poll_due(policy(), kept_up, {"s": 3000}, 101.5)
    assert early_poll_due(policy(), base(), {"s": 1150}, 101.5), "unknown flow: a burst"


def test_the_measured_rate_or_the_throughput_whichever_is_more() -> None:
    b = Baseline({"s": 0}, 0, 2, 100.0, 0.0, throughput=50.0)  # 2 x 100/s absorbed
    assert not early_poll_due(policy(), b, {"s": 390}, 1.0)
    b = Baseline({"s": 0}, 0, 2, 10.0, 0.0, throughput=200.0)
    assert not early_poll_due(policy(), b, {"s": 390}, 1.0)
    assert early_poll_due(policy(), b, {"s": 410}, 1.0)
