"""Real redis-server fixtures for the gateway: one server per version per session, emptied
before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import VERSIONS, RedisServer

from streamherd.gateway import Endpoint, RedisGateway


@pytest.fixture(scope="session", params=VERSIONS, ids=lambda v: f"redis-{v}")
def server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    redis_server = RedisServer(version=request.param).start()
    yield redis_server
    redis_server.cleanup()


@pytest.fixture
async def r(server: RedisServer) -> AsyncIterator[aredis.Redis]:
    """A plain client for setting up and checking Redis state."""
    # redis-py 8 reads with a 5 s timeout by default: a loaded machine reading a 200,000-entry
    # stream takes longer.
    client = aredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
    await client.flushall()
    await client.script_flush()
    yield client
    await client.aclose()


@pytest.fixture
async def gateway(server: RedisServer, r: aredis.Redis) -> AsyncIterator[RedisGateway]:
    gw = RedisGateway(Endpoint(url=server.url))
    yield gw
    await gw.close()
