"""Discovery's Redis I/O: how new stream keys of a pattern are learnt without SCAN.

- **The registry of new streams** (``keys.REGISTRY_KEY``): the SDK's ``publish`` appends a
  key's name the first time a publisher writes to it; a blocking ``XREAD`` from our own
  position learns it at once. Needs nothing from the Redis configuration.
- **Keyspace notifications** for new keys (the ``n`` class, Redis 7.0+) when the server's
  ``notify-keyspace-events`` enables them: with ``K`` a pattern subscription per key pattern
  (``__keyspace@<db>__:conv:*``, filtered by Redis; ``t``, stream commands, works too), with
  only ``E`` the ``__keyevent@<db>__:new`` channel (every new key of the database, filtered
  here). Notifications are node-local: on Redis Cluster, redis-py's cluster notifications
  hold one subscription per primary and follow topology changes. Where CONFIG is refused
  (managed services often do), whether they are on is unknown: both channels are subscribed
  anyway, which costs nothing when nothing is published.
- SCAN (``RedisGateway.scan_streams``) stays as the slow reconcile: it alone notices keys
  that went away.

A key learnt here is only a candidate: ``key_types`` checks its type first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.keyspace_notifications import (
    AsyncClusterKeyspaceNotifications,
    AsyncKeyspaceNotifications,
)
from redis.keyspace_notifications import KeyeventChannel, KeyspaceChannel

from streamherd.gateway.client import RedisGateway
from streamherd.keys import REGISTRY_FIELD, REGISTRY_KEY

NEW_KEY_EVENTS = frozenset({"new", "xadd"})
"""Keyspace events that say a key of ours exists (n: new key; t: a stream write)."""


class NotificationMode(StrEnum):
    KEYSPACE = "keyspace"
    """K with n or t: one pattern subscription per key pattern, filtered by Redis."""
    KEYEVENT = "keyevent"
    """E with n (no K): every new key of the database, filtered here."""
    UNKNOWN = "unknown"
    """CONFIG is not allowed: subscribe to both and use whatever arrives."""
    OFF = "off"


def notification_mode(flags: str | None) -> NotificationMode:
    """What ``notify-keyspace-events`` (None: could not be read) lets discovery use.
    ``A`` stands for "g$lshzxetd" (every class but n, m and the key-miss ones)."""
    if flags is None:
        return NotificationMode.UNKNOWN
    classes = set(flags)
    if "A" in classes:
        classes |= set("g$lshzxetd")
    if "K" in classes and classes & {"n", "t"}:
        return NotificationMode.KEYSPACE
    if "E" in classes and "n" in classes:
        return NotificationMode.KEYEVENT
    return NotificationMode.OFF


def database(gateway: RedisGateway) -> int:
    """The database index of the endpoint's URL (0 on Redis Cluster)."""
    path = urlsplit(gateway.endpoint.url).path.strip("/")
    return int(path) if path.isdigit() else 0


async def notification_flags(gateway: RedisGateway) -> str | None:
    """``notify-keyspace-events`` of the server (on Redis Cluster: what every primary has);
    None when CONFIG GET is refused or unknown (managed services)."""
    client = await gateway.client()
    try:
        if isinstance(client, RedisCluster):
            reply: Any = await client.config_get(
                "notify-keyspace-events", target_nodes=RedisCluster.PRIMARIES
            )
        else:
            reply = await client.config_get("notify-keyspace-events")
    except rx.ResponseError:
        return None
    except Exception as exc:
        raise gateway.classify(exc) from exc
    values = _flag_values(reply)
    if not values:
        return None
    common = set(values[0])
    for value in values[1:]:
        common &= set(value)
    return "".join(sorted(common))


def _flag_values(reply: Any) -> list[str]:
    if not isinstance(reply, dict):
        return []
    if "notify-keyspace-events" in reply:
        return [str(reply["notify-keyspace-events"] or "")]
    # a cluster: {node: {"notify-keyspace-events": flags}}
    return [
        str(per_node.get("notify-keyspace-events") or "")
        for per_node in reply.values()
        if isinstance(per_node, dict)
    ]


@dataclass
class Subscription:
    """Keyspace notifications of new keys, subscribed for some key patterns."""

    notifications: AsyncKeyspaceNotifications | AsyncClusterKeyspaceNotifications
    patterns: tuple[str, ...]
    mode: NotificationMode

    async def next_keys(self, within: float) -> list[str]:
        """Keys named by the notifications that arrive within ``within`` seconds (the
        first one waits, the rest are what is already buffered)."""
        keys: list[str] = []
        wait = within
        while True:
            note = await self.notifications.get_message(timeout=wait)
            if note is None:
                return keys
            if note.is_keyspace:
                if note.event_type in NEW_KEY_EVENTS:
                    keys.append(note.key)
            elif note.event_type == "new":
                keys.append(note.key)  # a keyevent message names the key
            wait = 0.0

    async def close(self) -> None:
        await self.notifications.aclose()  # type: ignore[no-untyped-call]


async def subscribe(
    gateway: RedisGateway, patterns: Sequence[str], mode: NotificationMode
) -> Subscription | None:
    """Subscribe to new-key notifications for ``patterns``; None when ``mode`` is OFF."""
    if mode is NotificationMode.OFF or not patterns:
        return None
    client = await gateway.client()
    db = database(gateway)
    notifications: AsyncKeyspaceNotifications | AsyncClusterKeyspaceNotifications
    if isinstance(client, RedisCluster):
        notifications = AsyncClusterKeyspaceNotifications(client)
    else:
        notifications = AsyncKeyspaceNotifications(client)
    channels: list[KeyspaceChannel | KeyeventChannel] = []
    if mode in (NotificationMode.KEYSPACE, NotificationMode.UNKNOWN):
        channels += [KeyspaceChannel(pattern, db=db) for pattern in patterns]
    if mode in (NotificationMode.KEYEVENT, NotificationMode.UNKNOWN):
        channels.append(KeyeventChannel("new", db=db))
    try:
        await notifications.subscribe(*channels)
    except Exception as exc:
        await notifications.aclose()  # type: ignore[no-untyped-call]
        raise gateway.classify(exc) from exc
    return Subscription(notifications, tuple(patterns), mode)


async def read_registry(
    gateway: RedisGateway, position: str, *, block_ms: int, count: int = 1000
) -> tuple[str, list[str]]:
    """Keys appended to the registry after ``position`` (blocking up to ``block_ms``);
    returns the new position and the keys, in order."""
    client = await gateway.client()
    try:
        reply: Any = await client.xread({REGISTRY_KEY: position}, count=count, block=block_ms)
    except Exception as exc:
        raise gateway.classify(exc) from exc
    items = reply.items() if isinstance(reply, dict) else (reply or [])
    keys: list[str] = []
    for _, entries in items:
        for entry_id, fields in entries:
            position = str(entry_id)
            name = fields.get(REGISTRY_FIELD) if isinstance(fields, dict) else None
            if name:
                keys.append(str(name))
    return position, keys


async def key_types(gateway: RedisGateway, keys: Iterable[str]) -> dict[str, str]:
    """Each key's TYPE (``"none"``: no such key), in one pipeline."""
    candidates = list(dict.fromkeys(keys))
    if not candidates:
        return {}
    replies = await gateway.pipeline([("TYPE", key) for key in candidates])
    return dict(zip(candidates, (str(kind) for kind in replies), strict=True))


__all__ = [
    "NotificationMode",
    "Subscription",
    "key_types",
    "notification_flags",
    "notification_mode",
    "read_registry",
    "subscribe",
]
