from hypothesis import given
from hypothesis import strategies as st

from streamherd.decisions.sampling import OldestMemory, age_sample, carry_oldest
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
