import pytest

from streamherd.decisions.rates import completion_rate
from streamherd.observations import GroupState


def group(entries_read: int | None, pending: int = 0) -> GroupState:
    return GroupState("g", 1, pending, entries_read, 0)


def test_rate_counts_acknowledged_work_per_second() -> None:
    assert completion_rate(group(100, 10), 10.0, group(300, 10), 12.0) == pytest.approx(100.0)


def test_reading_ahead_into_the_pel_is_not_progress() -> None:
    assert completion_rate(group(100, 0), 0.0, group(200, 100), 1.0) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("before", "after", "elapsed"),
    [
        (None, group(10), 1.0),  # first poll
        (group(None), group(10), 1.0),  # Redis does not know entries-read
        (group(10), group(None), 1.0),
        (group(10), group(20), 0.0),  # no time passed
        (group(50), group(10), 1.0),  # recreated / SETID backwards
    ],
)
def test_unknown_rather_than_wrong(
    before: GroupState | None, after: GroupState, elapsed: float
) -> None:
    assert completion_rate(before, 5.0, after, 5.0 + elapsed) is None
