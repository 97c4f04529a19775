"""Group health over a window: every state and its edges, then properties over random histories."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamherd.decisions.health import (
    MAX_SAMPLES,
    Health,
    HealthState,
    Sample,
    judge,
    remember,
)
from streamherd.observations import Exactness, Reading

WINDOW = 60.0


def s(
    at: float,
    backlog: int | None,
    *,
    pending: int | None = 0,
    read: int | None = 0,
    consumers: int | None = 1,
    ready: int | None = None,
    parked: bool = False,
    bound: bool = False,
) -> Sample:
    reading = (
        Reading.unknown()
        if backlog is None
        else Reading(backlog, Exactness.LOWER_BOUND if bound else Exactness.EXACT)
    )
    return Sample(
        at=at,
        backlog=reading,
        pending=pending,
        entries_read=read,
        consumers=consumers,
        ready_replicas=ready,
        parked=parked,
    )


def run(samples: Sequence[Sample], window: float = WINDOW) -> Health:
    history: tuple[Sample, ...] = ()
    health = None
    for sample in samples:
        health = judge(history, sample, window)
        history = health.history
    assert health is not None
    return health


def every(step: float, until: float, make) -> list[Sample]:  # type: ignore[no-untyped-def]
    out, t = [], 0.0
    while t <= until:
        out.append(make(t))
        t += step
    return out


# ------------------------------------------------------------------ Unknown is not OK


def test_an_unreadable_backlog_is_unknown_even_after_a_healthy_window() -> None:
    samples = every(2, 120, lambda t: s(t, 0))
    health = run([*samples, s(122, None, pending=None, read=None, consumers=None)])
    assert health.state is HealthState.UNKNOWN
    assert "cannot be read" in health.message


def test_a_backlog_before_the_window_is_covered_is_being_judged() -> None:
    health = run(every(2, 58, lambda t: s(t, 10, read=int(t))))
    assert health.state is HealthState.UNKNOWN
    assert "judging over the first 1m" in health.message


def test_unknown_polls_are_not_remembered_and_do_not_reset_the_window() -> None:
    samples = [s(t, 50, read=0) for t in range(0, 62, 2)]
    samples.insert(10, s(20.5, None, pending=None, read=None))
    health = run(samples)
    assert health.state is HealthState.STALLED
    assert all(x.backlog.known for x in health.history)


# ------------------------------------------------------------------ OK


def test_a_zero_backlog_is_ok_at_once() -> None:
    assert run([s(0, 0)]).state is HealthState.OK


def test_a_backlog_that_was_zero_within_the_window_is_ok() -> None:
    samples = [s(t, 0 if t == 30 else 100, read=0) for t in range(0, 62, 2)]
    health = run(samples)
    assert health.state is HealthState.OK
    assert "was 0 within the last 1m" in health.message


def test_a_group_kept_at_zero_on_purpose_is_ok() -> None:
    samples = [s(t, 5, ready=0, parked=True) for t in range(0, 200, 2)]
    health = run(samples)
    assert health.state is HealthState.OK
    assert "on purpose" in health.message


def test_progress_with_a_falling_backlog_is_ok() -> None:
    samples = [s(t, 1000 - t * 5, read=t * 10, pending=5) for t in range(0, 62, 2)]
    assert run(samples).state is HealthState.OK


def test_a_flat_backlog_with_progress_is_ok() -> None:
    samples = [s(t, 300, read=t * 10, pending=20) for t in range(0, 62, 2)]
    assert run(samples).state is HealthState.OK


def test_one_fall_in_the_window_is_enough_to_be_ok() -> None:
    backlogs = [100 + t for t in range(0, 62, 2)]
    backlogs[15] = 50
    samples = [s(t, b, read=t) for t, b in zip(range(0, 62, 2), backlogs, strict=True)]
    assert run(samples).state is HealthState.OK


# ------------------------------------------------------------------ Lagging


def test_a_backlog_growing_for_the_window_while_consuming_is_lagging() -> None:
    samples = [s(t, 100 + t * 10, read=t * 3, pending=4) for t in range(0, 62, 2)]
    health = run(samples)
    assert health.state is HealthState.LAGGING
    assert "grew over the last 1m and never fell" in health.message
    assert "700" not in health.message, "no live numbers in a condition (a write every poll)"


def test_growth_shorter_than_the_window_is_not_lagging_yet() -> None:
    early = [s(t, 1000 - t, read=t) for t in range(0, 40, 2)]
    late = [s(t, 500 + t * 10, read=t) for t in range(40, 90, 2)]
    assert run(early + late).state is HealthState.OK  # it fell at 40 (within [30, 90])
    assert run(early + late + [s(100, 2000, read=100)]).state is HealthState.LAGGING


def test_lower_bounds_hide_growth() -> None:
    samples = [s(t, 1000, bound=True, read=t) for t in range(0, 62, 2)]
    health = run(samples)
    assert health.state is HealthState.UNKNOWN
    assert "lower bound" in health.message


def test_a_lower_bound_above_an_exact_start_is_growth() -> None:
    samples = [s(t, 100 + t, read=t) for t in range(0, 60, 2)] + [s(60, 1000, bound=True, read=60)]
    assert run(samples).state is HealthState.LAGGING


def test_an_exact_value_under_an_earlier_lower_bound_is_a_fall() -> None:
    samples = [s(t, 1000, bound=True, read=t) for t in range(0, 30, 2)]
    samples += [s(t, 900, read=t) for t in range(30, 62, 2)]
    assert run(samples).state is HealthState.OK


# ------------------------------------------------------------------ Stalled


def test_nothing_delivered_or_acked_for_the_window_with_consumers_is_stalled() -> None:
    samples = [s(t, 40 + t, read=500, pending=20, ready=3) for t in range(0, 62, 2)]
    health = run(samples)
    assert health.state is HealthState.STALLED
    assert "nothing delivered or acknowledged for 1m while 3 consumer(s)" in health.message


def test_one_ack_in_the_window_is_progress() -> None:
    samples = [s(t, 40, read=500, pending=20 if t < 30 else 19) for t in range(0, 62, 2)]
    assert run(samples).state is not HealthState.STALLED


def test_one_delivery_in_the_window_is_progress() -> None:
    samples = [
        s(t, 40, read=500 if t < 30 else 501, pending=20 if t < 30 else 21) for t in range(0, 62, 2)
    ]
    assert run(samples).state is HealthState.OK


def test_progress_before_the_window_does_not_count() -> None:
    early = [s(t, 40, read=t, pending=5) for t in range(0, 30, 2)]
    late = [s(t, 40, read=28, pending=5) for t in range(30, 100, 2)]
    assert run(early + late).state is HealthState.STALLED


def test_crash_looping_consumers_without_progress_are_stalled() -> None:
    samples = [s(t, 80, read=7, pending=3, ready=t % 4 // 2) for t in range(0, 62, 2)]
    assert run(samples).state is HealthState.STALLED


def test_without_entries_read_a_falling_pending_is_progress() -> None:
    samples = [s(t, 60, read=None, pending=30 - t // 4) for t in range(0, 62, 2)]
    assert run(samples).state is HealthState.OK


def test_without_entries_read_and_no_sign_of_progress_is_unknown() -> None:
    samples = [s(t, 60, read=None, pending=30) for t in range(0, 62, 2)]
    health = run(samples)
    assert health.state is HealthState.UNKNOWN
    assert "entries-read is not known" in health.message


def test_entries_read_that_drops_is_a_stream_gone_not_progress() -> None:
    # A pattern's sum of entries-read drops when a call stream is deleted: that step cannot
    # tell whether the other streams moved (a drop of 10 may hide 3 deliveries).
    samples = [s(t, 60, read=100 if t < 30 else 90, pending=10) for t in range(0, 62, 2)]
    assert run(samples).state is HealthState.UNKNOWN
    later = [s(t, 60, read=90, pending=10) for t in range(62, 100, 2)]
    assert run(samples + later).state is HealthState.STALLED  # the drop left the window


# ------------------------------------------------------------------ Stopped


def test_backlog_and_no_ready_pod_for_the_window_is_stopped() -> None:
    samples = [s(t, 30, ready=0, consumers=4) for t in range(0, 62, 2)]
    health = run(samples)
    assert health.state is HealthState.STOPPED
    assert "no ready pods for 1m" in health.message


def test_without_a_deployment_no_consumers_is_stopped() -> None:
    samples = [s(t, 30, consumers=0) for t in range(0, 62, 2)]
    health = run(samples)
    assert health.state is HealthState.STOPPED
    assert "no consumers" in health.message


def test_a_wake_from_zero_is_not_stopped_while_it_lasts_less_than_the_window() -> None:
    asleep = [s(t, 0, ready=0, parked=True) for t in range(0, 100, 2)]
    waking = [s(t, 50, ready=0) for t in range(100, 130, 2)]  # desired 1, pod starting
    assert run(asleep + waking).state is HealthState.OK  # backlog 0 at 98, within the window
    awake = [s(t, 50 - (t - 130), read=t - 130, ready=1) for t in range(130, 170, 2)]
    assert run(asleep + waking + awake).state is HealthState.OK


def test_a_wake_that_never_brings_a_pod_is_stopped_after_the_window() -> None:
    asleep = [s(t, 0, ready=0, parked=True) for t in range(0, 100, 2)]
    waking = [s(t, 50, ready=0) for t in range(100, 170, 2)]
    assert run(asleep + waking).state is HealthState.STOPPED


# ------------------------------------------------------------------ the window and the history


@pytest.mark.parametrize("window", [1.0, 10.0, 300.0])
def test_the_window_is_configurable(window: float) -> None:
    samples = [s(t / 2, 50, read=0) for t in range(0, int(window * 2) + 4)]
    assert run(samples, window).state is HealthState.STALLED
    assert run(samples[: int(window * 2)], window).state is HealthState.UNKNOWN


def test_history_is_bounded_however_fast_the_polls() -> None:
    history: tuple[Sample, ...] = ()
    for i in range(20_000):
        history = remember(history, s(i * 0.01, 5), WINDOW)
    assert len(history) <= MAX_SAMPLES + 2
    assert history[0].at <= history[-1].at - WINDOW  # still covers the window


def test_history_keeps_one_sample_before_the_window() -> None:
    history: tuple[Sample, ...] = ()
    for t in range(0, 200, 2):
        history = remember(history, s(t, 5), WINDOW)
    assert history[0].at == 198 - 60
    assert history[1].at > 198 - 60


# ------------------------------------------------------------------ properties


@st.composite
def histories(draw: st.DrawFn) -> list[Sample]:
    n = draw(st.integers(1, 60))
    t, read, pending = 0.0, draw(st.integers(0, 100)), draw(st.integers(0, 20))
    out = []
    for _ in range(n):
        t += draw(st.sampled_from([0.5, 2.0, 5.0, 13.0]))
        read += draw(st.sampled_from([0, 0, 0, 1, 7]))
        pending = max(0, pending + draw(st.integers(-3, 3)))
        lag = draw(st.integers(0, 50))
        kind = draw(st.sampled_from(["exact", "exact", "exact", "bound", "unknown"]))
        backlog = (
            Reading.unknown()
            if kind == "unknown"
            else Reading(
                lag + pending, Exactness.LOWER_BOUND if kind == "bound" else Exactness.EXACT
            )
        )
        out.append(
            Sample(
                at=t,
                backlog=backlog,
                pending=None if kind == "unknown" else pending,
                entries_read=draw(st.sampled_from([read, read, None])),
                consumers=draw(st.integers(0, 3)),
                ready_replicas=draw(st.sampled_from([None, 0, 1, 2])),
                parked=draw(st.booleans()),
            )
        )
    return out


@settings(max_examples=150, deadline=None)
@given(histories(), st.sampled_from([5.0, 30.0, 60.0]))
def test_properties(samples: list[Sample], window: float) -> None:
    history: tuple[Sample, ...] = ()
    for sample in samples:
        health = judge(history, sample, window)
        history = health.history
        # Unknown is not zero: an unreadable backlog is never judged OK (or anything else).
        if not sample.backlog.known:
            assert health.state is HealthState.UNKNOWN
        elif sample.backlog.value == 0:
            assert health.state is HealthState.OK
        # The history stays bounded, ordered, and made of readable samples only.
        assert len(history) <= MAX_SAMPLES + 2
        assert all(a.at < b.at for a, b in itertools.pairwise(history))
        assert all(x.backlog.known for x in history)
        if health.state in (HealthState.STOPPED, HealthState.STALLED, HealthState.LAGGING):
            start = sample.at - window
            seen = [x for x in history if x.at >= start]
            older = [x for x in history if x.at <= start]
            assert older, "a bad state is only ever judged over a covered window"
            seen = [older[-1], *seen]
            assert all((x.backlog.value or 0) > 0 for x in seen)
            assert not sample.parked
            if health.state is HealthState.STOPPED:
                assert all(x.live == 0 for x in seen)
            if health.state is HealthState.STALLED:
                known = [x for x in seen if x.entries_read is not None]
                assert len({x.entries_read for x in known}) <= len(known)
                assert not all(x.live == 0 for x in seen)
                for a, b in itertools.pairwise(seen):
                    assert a.pending is not None and b.pending is not None
                    assert b.pending >= a.pending or (
                        a.entries_read is not None
                        and b.entries_read is not None
                        and b.entries_read >= a.entries_read
                        and b.entries_read - b.pending <= a.entries_read - a.pending
                    )
            if health.state is HealthState.LAGGING:
                values = [x.backlog.value or 0 for x in seen]
                assert values[-1] > values[0]
                assert all(b >= a for a, b in itertools.pairwise(values))
