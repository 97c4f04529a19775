import pytest

from streamherd.decisions.rates import Progress, completion_rate, smoothed
from streamherd.decisions.totals import GroupTotals
from streamherd.observations import Reading


def totals(entries_read: int | None, pending: int = 0, lag: int = 10) -> GroupTotals:
    return GroupTotals(
        known=True, pending=pending, lag=Reading.exact(lag), entries_read=entries_read
    )


def at(t: float, entries_read: int, pending: int = 0, lag: int = 10, replicas: int = 1) -> Progress:
    progress = Progress.of(totals(entries_read, pending, lag), t, replicas)
    assert progress is not None
    return progress


def test_rate_counts_acknowledged_work_per_second() -> None:
    assert completion_rate(at(10.0, 100, 10), at(12.0, 300, 10)) == pytest.approx(100.0)


def test_the_rate_is_per_replica() -> None:
    before, after = at(10.0, 100, 10, replicas=4), at(12.0, 900, 10, replicas=4)
    assert completion_rate(before, after) == pytest.approx(100.0)


def test_reading_ahead_into_the_pel_is_not_progress() -> None:
    assert completion_rate(at(0.0, 100, 0), at(1.0, 200, 100)) == pytest.approx(0.0)


def test_unknown_entries_read_or_an_unreadable_endpoint_is_no_progress_at_all() -> None:
    assert Progress.of(totals(None), 1.0) is None
    assert Progress.of(GroupTotals.unknown(), 1.0) is None


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, at(1.0, 10)),  # first poll
        (at(1.0, 10), at(1.0, 20)),  # no time passed
        (at(1.0, 50), at(2.0, 10)),  # recreated / SETID backwards
        (at(1.0, 10, lag=0), at(2.0, 20)),  # no work before: the arrival rate
        (at(1.0, 10), at(2.0, 20, lag=0)),  # no work after
        # Keeping up (nothing waits undelivered, only work in flight): the arrival rate.
        (at(1.0, 10, pending=5, lag=0), at(2.0, 20, pending=5, lag=0)),
        # Replicas started in between (issue 16's burst: "0.5/s per replica" while 20 new
        # pods were still starting asked for 1,072 replicas), or stopped.
        (at(1.0, 10, replicas=5), at(2.0, 20, replicas=20)),
        (at(1.0, 10, replicas=20), at(2.0, 20, replicas=5)),
        (at(1.0, 10, replicas=0), at(2.0, 20, replicas=0)),  # at zero
    ],
)
def test_unknown_rather_than_wrong(before: Progress | None, after: Progress) -> None:
    assert completion_rate(before, after) is None


def test_the_rate_is_smoothed() -> None:
    assert smoothed(None, 10.0) == 10.0
    assert smoothed(10.0, 20.0) == pytest.approx(15.0)
