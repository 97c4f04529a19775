from hypothesis import given
from hypothesis import strategies as st

from streamherd.decisions.sampling import (
    OldestMemory,
    age_sample,
    carry_first_unread,
    carry_oldest,
)
from streamherd.observations import GroupState, StreamState, StreamStatus


@given(
    st.sets(st.text(min_size=1, max_size=20), max_size=200),
    st.integers(1, 10),
    st.integers(0, 1000),
)
def test_each_key_exactly_once_per_cycle(keys: set[str], every: int, start: int) -> None:
    seen: list[str] = []
    for poll in range(start, start + every):
        seen.extend(age_sample(keys, poll, every))
    assert sorted(seen) == sorted(keys)


def test_spread_evenly_and_stable_as_keys_come_and_go() -> None:
    keys = {f"conv:{i}" for i in range(10_000)}
    sizes = [len(age_sample(keys, poll, 5)) for poll in range(5)]
    assert all(1800 < size < 2200 for size in sizes)
    fewer = keys - {f"conv:{i}" for i in range(100)}
    assert age_sample(fewer, 3, 5) == age_sample(keys, 3, 5) - {f"conv:{i}" for i in range(100)}


def test_every_one_means_all() -> None:
    assert age_sample({"a", "b"}, 7, 1) == {"a", "b"}


def stream(key: str, **groups: tuple[int, str | None, bool]) -> StreamState:
    """groups: name=(pending, oldest id, measured)."""
    states = {
        name: GroupState(name, 1, pending, 0, 0, oldest, measured)
        for name, (pending, oldest, measured) in groups.items()
    }
    return StreamState(key, StreamStatus.OK, length=5, groups=states)


def test_the_oldest_pending_id_is_carried_between_measurements() -> None:
    polls = [
        {"a": stream("a", g=(2, "900-0", True), h=(1, None, False))},
        {"a": stream("a", g=(2, None, False), h=(1, None, False))},
        {"a": stream("a", g=(1, "1200-0", True), h=(1, "1100-0", True))},
        {"a": stream("a", g=(0, None, True), h=(1, None, False))},
    ]
    memory: OldestMemory = {}
    seen = []
    for streams in polls:
        memory, unmeasured = carry_oldest(streams, memory)
        groups = streams["a"].groups
        seen.append((groups["g"].oldest_pending_id, groups["h"].oldest_pending_id, unmeasured))
    assert seen == [
        ("900-0", None, {"a"}),  # h: pending, never measured: measured next time
        ("900-0", None, {"a"}),  # g carried from its last measurement
        ("1200-0", "1100-0", set()),
        (None, "1100-0", set()),  # g: nothing pending: forgotten; h carried
    ]
    assert memory == {("a", "h"): "1100-0"}
    memory, _ = carry_oldest({}, memory)
    assert memory == {}, "a stream no longer polled is forgotten"


def lagging(name: str, first: str | None, after: str | None = None) -> GroupState:
    return GroupState(name, 1, 0, 3, 7, None, True, first_unread_id=first, looked_up_after=after)


def test_first_unread_hints_are_those_sent_and_what_was_looked_up() -> None:
    sent = {"a": "100-0 110-0", "gone": "1-0 2-0"}
    streams = {
        "a": StreamState(
            "a",
            StreamStatus.OK,
            length=9,
            groups={
                "uses-hint": lagging("uses-hint", "110-0"),
                "looked-up": lagging("looked-up", "310-0", after="300-0"),
                "same-place": lagging("same-place", "310-0", after="300-0"),
                "at-tail": lagging("at-tail", None),
            },
        ),
        "new": StreamState("new", StreamStatus.OK, groups={"g": lagging("g", "5-0", "4-0")}),
        "b": StreamState("b", StreamStatus.MISSING),
        "gone": StreamState("gone", StreamStatus.ERROR, error="boom"),
    }
    hints = carry_first_unread(streams, sent)
    assert hints == {"a": "100-0 110-0 300-0 310-0", "new": "4-0 5-0"}, (
        "one pair per position; b and gone not OK; at-tail has nothing to hint"
    )
    assert carry_first_unread({}, hints) == {}, "only the streams of this poll"
    unsent = {"a": StreamState("a", StreamStatus.OK, groups={"g": lagging("g", "110-0")})}
    assert carry_first_unread(unsent, {}) == {}, "an age turn (nothing sent) starts again"


def test_the_common_case_allocates_nothing_new() -> None:
    sent = {"a": "100-0 110-0"}
    streams = {"a": StreamState("a", StreamStatus.OK, groups={"g": lagging("g", "110-0")})}
    assert carry_first_unread(streams, sent)["a"] is sent["a"]


@given(
    st.lists(
        st.tuples(st.sampled_from(["1-0", "2-0", "3-0"]), st.sampled_from(["5-0", "6-0"])),
        max_size=8,
    ),
    st.integers(min_value=1, max_value=10),
)
def test_hints_hold_at_most_one_pair_per_position_between_age_turns(
    lookups: list[tuple[str, str]], polls: int
) -> None:
    """Lookups poll after poll (each poll some groups look up, the hints of the last poll
    sent back): no pair is ever repeated."""
    hints: dict[str, str] = {}
    for _ in range(polls):
        groups = {
            f"g{i}": lagging(f"g{i}", first, after) for i, (after, first) in enumerate(lookups)
        }
        hints = carry_first_unread({"a": StreamState("a", StreamStatus.OK, groups=groups)}, hints)
    words = hints.get("a", "").split()
    pairs = list(zip(words[::2], words[1::2], strict=True))
    assert len(pairs) == len(set(pairs)) == len(set(lookups))
