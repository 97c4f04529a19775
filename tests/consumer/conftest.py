"""The consumer SDK's tests: real redis-server 7.0 and 8.2 (the gateway suite's fixtures,
one server per version, emptied before each test) and real consumer processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from e2e.cluster.redis import RedisServer
from tests.gateway.conftest import r, server

from streamherd.consumer import Consumer, StreamClient

__all__ = ["r", "server"]  # fixtures, reused as they are


@pytest.fixture
async def client(server: RedisServer, r: Any) -> AsyncIterator[StreamClient]:
    """The SDK's client as consumer "c1" of group "g"."""
    c = StreamClient.from_url(server.url, group="g", consumer="c1")
    yield c
    await c.close()


@asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[asyncio.Task[None]]:
    """The consumer's loop as a task; stopped (and awaited) on the way out."""
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 30)
        await consumer.client.close()


def recorder() -> tuple[list[Any], Callable[[Any], Any]]:
    """A handler that records what it was given."""
    seen: list[Any] = []

    async def handle(entry: Any) -> None:
        seen.append(entry)

    return seen, handle
