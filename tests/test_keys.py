"""Pattern matching must agree with Redis itself: every case is checked against a real
redis-server's KEYS, then against glob_match."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from e2e.cluster.redis import RedisServer

from streamherd.keys import glob_match, is_auxiliary, literal_prefix, parse_id

KEYS = [
    "conv:1",
    "conv:12",
    "conv:1:dlq",
    "conv:",
    "conv",
    "conv:a]b",
    "conv:*",
    "conv:?",
    "Conv:1",
    "conv:x-y",
    "c\\onv",
    "orders",
    "{conv}:9",
    "conv:b",
    "conv:^",
]
PATTERNS = [
    "conv:*",
    "conv:?",
    "conv:[0-9]*",
    "conv:[^0-9]*",
    "conv:[a-c]",
    "conv:[c-a]",
    "conv:\\*",
    "conv:\\?",
    "*:dlq",
    "*",
    "conv:**",
    "conv:[\\]]",
    "conv:a]b",
    "c\\\\onv",
    "{conv}:*",
    "conv:[^]",
    "conv:[",
    "conv",
    "",
]


def test_glob_match_agrees_with_redis(redis_server_factory: Callable[..., RedisServer]) -> None:
    s = redis_server_factory("7.0")
    client = redis.Redis(host=s.host, port=s.port, decode_responses=True)
    for key in KEYS:
        client.set(key, "1")
    for pattern in PATTERNS:
        expected = set(client.keys(pattern))
        assert {k for k in KEYS if glob_match(pattern, k)} == expected, pattern


def test_literal_prefix() -> None:
    assert literal_prefix("conv:*") == "conv:"
    assert literal_prefix("conv:\\*x*") == "conv:*x"
    assert literal_prefix("*") == ""
    assert literal_prefix("a?b") == "a"
    assert literal_prefix("orders") == "orders"


def test_auxiliary_keys() -> None:
    assert is_auxiliary("conv:1:dlq")
    assert is_auxiliary("{conv:1}:dlq")
    assert is_auxiliary("streamherd:streams")
    assert not is_auxiliary("conv:1")


@pytest.mark.parametrize(("text", "pair"), [("5", (5, 0)), ("5-3", (5, 3)), ("0-0", (0, 0))])
def test_ids_compare_numerically(text: str, pair: tuple[int, int]) -> None:
    assert parse_id(text) == pair
    assert parse_id("10-0") > parse_id("9-99")
