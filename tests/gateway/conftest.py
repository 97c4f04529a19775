"""Real redis-server fixtures for the gateway: one server per version per session, emptied
before each test. Valkey 9.1 is one of them (``SERVERS``): every test on ``server`` runs on
Redis 7.0, 8.2 and Valkey 9.1 (the janitor's and the SDK's Redis tests reuse it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aredis
from e2e.cluster.redis import SERVERS, RedisServer

from streamherd.gateway import Endpoint, RedisGateway


@pytest.fixture(scope="session", params=SERVERS, ids=lambda v: v if "valkey" in v else f"redis-{v}")
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
