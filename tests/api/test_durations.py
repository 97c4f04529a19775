import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamherd.api.durations import Duration, DurationError, parse_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("250ms", 0.25),
        ("2s", 2),
        ("5m", 300),
        ("24h", 86400),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("1m0.5s", 60.5),
    ],
)
def test_parses_kubernetes_style(text: str, seconds: float) -> None:
    assert parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "-5s", "5", "5 s", "5d", "1us", "s", "5S", "1h-5m", "5s ", "x" * 40]
)
def test_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(DurationError, match="is not a duration"):
        parse_seconds(text)


def test_equality_and_order_are_by_value_and_text_is_kept() -> None:
    assert Duration.parse("60s") == Duration.parse("1m")
    assert Duration.parse("1m") < Duration.parse("61s")
    assert str(Duration.parse("1m")) == "1m"
    assert len({Duration.parse("60s"), Duration.parse("1m")}) == 1


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h"])),
        min_size=1,
        max_size=4,
    )
)
def test_any_sum_of_parts_parses_to_its_value(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    if len(text) > 32:
        return
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    assert parse_seconds(text) == pytest.approx(sum(n * unit[u] for n, u in parts))
