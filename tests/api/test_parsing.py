"""parse(): whatever reaches the operator in place of a spec is a SpecError, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from streamherd.api import SpecError, parse
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
