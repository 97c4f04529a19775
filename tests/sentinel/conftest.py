"""Sentinel fixtures: a primary, a replica and three sentinels per test (they are changed by
the failover the test makes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.cluster.redis import RedisSentinelSet


@pytest.fixture
def sentinels() -> Iterator[RedisSentinelSet]:
    started = RedisSentinelSet().start()
    yield started
    started.cleanup()
