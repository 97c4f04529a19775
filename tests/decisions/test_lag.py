import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamherd.decisions.lag import effective_lag, group_lag
from streamherd.observations import Exactness, GroupState, Reading, StreamState, StreamStatus


def lag(**kw: object) -> Reading:
    base: dict[str, object] = dict(
        reported=5, counted=None, count_cap=1000, length=10, at_tail=None
    )
    base.update(kw)
    return effective_lag(**base)  # type: ignore[arg-type]


def test_a_reported_lag_within_the_stream_is_exact() -> None:
    assert lag() == Reading(5, Exactness.EXACT)


def test_zero_is_exact_whatever_else() -> None:
    assert lag(reported=0, at_tail=True, length=0) == Reading(0, Exactness.EXACT)


def test_stale_lag_at_the_tail_reads_zero() -> None:
    # redis/redis #13337: XDEL after the group; 7.x keeps lag > 0 with the group at the end
    assert lag(reported=3, at_tail=True) == Reading(0, Exactness.CLAMPED)


def test_group_before_the_tail_keeps_its_lag() -> None:
    assert lag(reported=3, at_tail=False) == Reading(3, Exactness.EXACT)


def test_empty_stream_tail_means_nothing_to_deliver() -> None:
    assert lag(reported=4, length=0, at_tail=True) == Reading(0, Exactness.CLAMPED)


def test_lag_larger_than_the_stream_is_clamped_to_its_length() -> None:
    # redis/redis #13473: trimmed ahead of the group
    assert lag(reported=50, length=10) == Reading(10, Exactness.CLAMPED)


def test_null_lag_counted_below_the_cap_is_exact() -> None:
    assert lag(reported=None, counted=42) == Reading(42, Exactness.EXACT)


def test_null_lag_counted_to_the_cap_is_a_lower_bound() -> None:
    reading = lag(reported=None, counted=1000)
    assert reading == Reading(1000, Exactness.LOWER_BOUND)
    assert reading.display() == ">=1000"


def test_null_lag_not_counted_is_unknown_never_zero() -> None:
    reading = lag(reported=None, counted=None)
    assert reading.value is None and reading.exactness is Exactness.UNKNOWN
    assert reading.display() == "unknown"


def test_backlog_is_as_weak_as_its_weakest_part() -> None:
    assert Reading(3, Exactness.LOWER_BOUND) + Reading.exact(2) == Reading(5, Exactness.LOWER_BOUND)
    assert Reading(3, Exactness.CLAMPED) + Reading.exact(2) == Reading(5, Exactness.CLAMPED)
    assert (Reading.unknown() + Reading.exact(2)).value is None


@given(
    reported=st.one_of(st.none(), st.integers(0, 10**6)),
    counted=st.one_of(st.none(), st.integers(0, 2000)),
    length=st.integers(0, 10**6),
    at_tail=st.one_of(st.none(), st.booleans()),
)
def test_never_more_than_the_stream_holds_and_unknown_only_when_unmeasured(
    reported: int | None, counted: int | None, length: int, at_tail: bool | None
) -> None:
    counted = None if reported is not None else counted
    reading = effective_lag(
        reported=reported,
        counted=counted,
        count_cap=1000,
        length=length,
        at_tail=at_tail,
    )
    if reported is None and counted is None:
        assert reading.exactness is Exactness.UNKNOWN
        return
    assert reading.value is not None and reading.value >= 0
    if reported is not None:
        assert reading.value <= length or reading.value == 0


@pytest.mark.parametrize(
    ("facts", "length", "expected"),
    [
        ({"reported_lag": 3}, 10, Reading.exact(3)),
        ({"reported_lag": 12}, 10, Reading(10, Exactness.CLAMPED)),  # #13473
        ({"reported_lag": 4, "at_tail": True}, 10, Reading(0, Exactness.CLAMPED)),  # #13337
        ({"reported_lag": 4, "at_tail": True}, 0, Reading(0, Exactness.CLAMPED)),
        ({"reported_lag": None, "counted_lag": 7}, 10, Reading.exact(7)),
        ({"reported_lag": None, "counted_lag": 1000}, 5000, Reading(1000, Exactness.LOWER_BOUND)),
        # The script's budget stopped the count (or it saw one entry, the budget spent).
        (
            {"reported_lag": None, "counted_lag": 7, "counted_lag_bound": True},
            5000,
            Reading(7, Exactness.LOWER_BOUND),
        ),
        ({"reported_lag": None}, 10, Reading.unknown()),
    ],
)
def test_a_groups_lag_is_decided_from_what_redis_reported(
    facts: dict[str, object], length: int, expected: Reading
) -> None:
    state = GroupState("g", 1, 0, None, **facts)  # type: ignore[arg-type]
    stream = StreamState("s", StreamStatus.OK, length=length, groups={"g": state})
    assert group_lag(stream, state, count_cap=1000) == expected


@given(
    reported=st.none() | st.integers(0, 3000),
    counted=st.none() | st.integers(0, 1000),
    length=st.integers(0, 3000),
    at_tail=st.none() | st.just(True),
)
def test_group_lag_is_effective_lag_of_what_was_reported(
    reported: int | None, counted: int | None, length: int, at_tail: bool | None
) -> None:
    state = GroupState("g", 1, 0, None, reported, counted_lag=counted, at_tail=at_tail)
    stream = StreamState("s", StreamStatus.OK, length=length, groups={"g": state})
    assert group_lag(stream, state, 1000) == effective_lag(
        reported=reported, counted=counted, count_cap=1000, length=length, at_tail=at_tail
    )
