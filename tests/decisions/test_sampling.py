from hypothesis import given
from hypothesis import strategies as st

from streamherd.decisions.sampling import age_sample


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
