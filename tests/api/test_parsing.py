"""parse(): whatever reaches the operator in place of a spec is a SpecError, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from streamherd.api import SpecError, SpecParser, parse
from streamherd.api.consumergroup import ConsumerGroupSpec
from streamherd.api.redisstream import RedisStreamSpec


@pytest.mark.parametrize("data", [7, 2**100, "orders", ["key"], True, 1.5])
@pytest.mark.parametrize("model", [RedisStreamSpec, ConsumerGroupSpec])
def test_a_spec_that_is_not_an_object_is_a_spec_error(model: Any, data: Any) -> None:
    with pytest.raises(SpecError) as caught:
        parse(model, data)
    assert caught.value.problems == [f"spec: must be an object, not {type(data).__name__}"]


def test_a_megabyte_in_a_spec_is_quoted_in_short() -> None:
    huge = "x" * (1 << 20)
    with pytest.raises(SpecError) as caught:
        parse(ConsumerGroupSpec, {"streamRef": {"name": "orders"}, huge: 1, "groupName": huge})
    assert len(str(caught.value)) < 2000
    assert f"spec.{'x' * 64}...(1048576 characters): unknown field" in caught.value.problems


def test_a_spec_parser_validates_again_only_when_the_spec_changed() -> None:
    parser = SpecParser(ConsumerGroupSpec)
    spec: dict[str, Any] = {"streamRef": {"name": "a"}}
    first = parser(spec)
    assert parser({"streamRef": {"name": "a"}}) is first, "an equal spec: the same model"
    spec["streamRef"]["name"] = "b"  # an edit in place is a change too
    assert parser(spec).stream_ref.name == "b"
    spec["streamRef"] = 7
    for _ in range(2):  # an invalid spec is refused at every call, not only the first
        with pytest.raises(SpecError, match=r"spec\.streamRef"):
            parser(spec)
    assert parser({"streamRef": {"name": "c"}}).stream_ref.name == "c"
    with pytest.raises(SpecError, match="must be an object"):
        parser([])  # type: ignore[arg-type]
