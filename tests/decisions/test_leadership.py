"""Leader election's decisions (decisions.leadership), as client-go's leaderelection makes them."""

from __future__ import annotations

import pytest

from streamherd.decisions.leadership import ElectionTiming, LeaseRecord, may_acquire


def record(holder: str, duration: float = 10) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration_seconds=duration, renew_time="t", transitions=0)


def test_a_lease_is_taken_only_when_free_ours_or_unrenewed_for_its_duration() -> None:
    assert may_acquire(record(""), "me", observed_at=100, now=100)  # released
    assert may_acquire(record("me"), "me", observed_at=100, now=100)  # ours: renew
    assert not may_acquire(record("other"), "me", observed_at=100, now=109.9)
    assert may_acquire(record("other"), "me", observed_at=100, now=110)
    # The holder's own duration counts (a holder with a longer lease is waited for longer).
    assert not may_acquire(record("other", duration=30), "me", observed_at=100, now=110)


def test_the_timings_leave_the_leader_time_to_stop_before_its_lease_expires() -> None:
    timing = ElectionTiming()
    assert (timing.lease_duration, timing.renew_deadline, timing.retry_period) == (10, 6, 2)
    assert timing.renew_deadline < timing.stop_after < timing.lease_duration
    assert timing.stop_after == 8
    with pytest.raises(ValueError, match="longer than the renew deadline"):
        ElectionTiming(lease_duration=5, renew_deadline=5)
    with pytest.raises(ValueError, match=r"1\.2 x the retry period"):
        ElectionTiming(lease_duration=10, renew_deadline=2, retry_period=2)
