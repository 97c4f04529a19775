"""One shared gateway per distinct endpoint, closed when the last user lets go."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from streamherd.gateway.client import RedisGateway
from streamherd.gateway.endpoint import Endpoint


@dataclass
class _Entry:
    gateway: RedisGateway
    users: set[str] = field(default_factory=set)


class GatewayPool:
    """``acquire(user, endpoint)`` hands every user of an endpoint the same gateway; a user
    whose endpoint changes (a new Secret value, say) moves to the right one."""

    def __init__(self, **gateway_options: Any) -> None:
        self._options = gateway_options
        self._entries: dict[str, _Entry] = {}
        self._user_endpoint: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, user: str, endpoint: Endpoint) -> RedisGateway:
        async with self._lock:
            identity = endpoint.identity
            previous = self._user_endpoint.get(user)
            if previous is not None and previous != identity:
                await self._drop(user, previous)
            entry = self._entries.get(identity)
            if entry is None:
                entry = self._entries[identity] = _Entry(RedisGateway(endpoint, **self._options))
            entry.users.add(user)
            self._user_endpoint[user] = identity
            return entry.gateway

    async def release(self, user: str) -> None:
        async with self._lock:
            identity = self._user_endpoint.pop(user, None)
            if identity is not None:
                await self._drop(user, identity)

    async def _drop(self, user: str, identity: str) -> None:
        entry = self._entries.get(identity)
        if entry is None:
            return
        entry.users.discard(user)
        if not entry.users:
            del self._entries[identity]
            await entry.gateway.close()

    def gateways(self) -> list[RedisGateway]:
        return [entry.gateway for entry in self._entries.values()]

    async def close(self) -> None:
        async with self._lock:
            entries, self._entries = list(self._entries.values()), {}
            self._user_endpoint.clear()
        for entry in entries:
            await entry.gateway.close()
