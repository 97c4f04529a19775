"""Discovery of new stream keys on one endpoint, without waiting for SCAN.

Two event-driven paths feed a poller's key sets (see ``gateway/discovery.py`` for what each
needs from Redis): the registry of new streams the SDK's ``publish`` writes, read with a
blocking XREAD from our own position (from its start when the operator starts, so calls that
began while it was down are found too); and keyspace notifications of new keys where the
server enables them. A key matching a subscribed pattern joins that pattern's key set at once
and the endpoint is polled at once, so its groups are created within a poll's time. SCAN goes
on in the polls as the slow reconcile (the only path that notices keys going away).

A candidate that holds no stream yet (a publisher may announce a key before its first XADD) is
not dropped: it is checked again every ``ABSENT_RECHECK_SECONDS`` for ``ANNOUNCED_KEY_GRACE``,
the rule the SDK's consumers follow too (``consumer/following.py``), so its groups are created
within a second of its first entry rather than when SCAN comes round to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from streamherd.gateway import GatewayError
from streamherd.gateway.discovery import (
    NotificationMode,
    key_types,
    notification_flags,
    notification_mode,
    read_registry,
    subscribe,
)
from streamherd.keys import ANNOUNCED_KEY_GRACE, REGISTRY_KEY, glob_match, is_auxiliary
from streamherd.tasks import cancelled

if TYPE_CHECKING:
    from streamherd.controller.polling import Poller

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
CONFIG_RECHECK_SECONDS = 60.0
"""Notifications off (or unknown): look at notify-keyspace-events again this often."""
ABSENT_RECHECK_SECONDS = 0.5
"""How often announced keys that hold no stream yet are checked again (one round trip for all)."""
ABSENT_CHECKS_PER_ROUND = 1000


class Discoverer:
    """The event-driven discovery of one endpoint's poller: a task per path, started when
    the poller first has a key pattern to follow.

    ``_absent`` (candidate key → when it was first found holding no stream) is this object's
    alone: written by ``offer`` and the recheck task, both on the event loop; a key leaves it
    when it is found, learned by another path, or its grace has passed."""

    def __init__(
        self,
        poller: Poller,
        *,
        registry: bool = True,
        notifications: bool = True,
        block_ms: int = 1000,
        absent_grace: float = ANNOUNCED_KEY_GRACE,
    ) -> None:
        self._poller = poller
        self._paths = {"registry": registry, "notifications": notifications}
        self._block_ms = block_ms
        self._changed = {path: asyncio.Event() for path in self._paths}
        self._tasks: list[asyncio.Task[None]] = []
        self.mode: NotificationMode | None = None
        """What the server's notify-keyspace-events allows (None: not looked yet)."""
        self.flags: str | None = None
        self.absent_grace = absent_grace
        self._absent: dict[str, float] = {}
        self._absent_changed = asyncio.Event()
        self._stopped = False
        """Stopped with its poller: a loop unsubscribing after that (a group whose stream's
        loop ended first) starts nothing again (its tasks ran on past the operator's exit)."""

    def patterns_changed(self) -> None:
        for event in self._changed.values():
            event.set()
        if not self._tasks and not self._stopped:
            name = self._poller.endpoint
            if self._paths["registry"]:
                self._tasks.append(asyncio.create_task(self._registry(), name=f"registry {name}"))
            if self._paths["notifications"]:
                self._tasks.append(
                    asyncio.create_task(self._notifications(), name=f"notifications {name}")
                )
            self._tasks.append(asyncio.create_task(self._recheck_absent(), name=f"absent {name}"))

    async def stop(self) -> None:
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancelled(task)

    def describe(self) -> str:
        """How new keys are found, for a RedisStream's status."""
        paths = []
        if self._paths["registry"]:
            paths.append("registry")
        if self._paths["notifications"]:
            if self.mode in (NotificationMode.KEYSPACE, NotificationMode.KEYEVENT):
                paths.append(f"notifications ({self.mode}, notify-keyspace-events={self.flags})")
            elif self.mode is NotificationMode.UNKNOWN:
                paths.append("notifications (unknown: CONFIG not allowed; subscribed anyway)")
            elif self.mode is NotificationMode.OFF:
                paths.append(
                    f"no notifications (notify-keyspace-events={self.flags!r} has no Kn/Kt/En)"
                )
        paths.append("scan")
        return ", ".join(paths)

    async def _wait_for_patterns(self, path: str) -> list[str]:
        changed = self._changed[path]
        while True:
            patterns = self._poller.patterns()
            if patterns:
                return patterns
            changed.clear()
            await changed.wait()

    async def _registry(self) -> None:
        position = "0"  # the whole (capped) registry once: calls begun while we were away
        gateway = self._poller.gateway
        while True:
            await self._wait_for_patterns("registry")
            try:
                position, keys = await read_registry(gateway, position, block_ms=self._block_ms)
                await self.offer(keys, "registry")
            except GatewayError as exc:  # the polls report Redis trouble
                logger.debug("registry of %s: %s", self._poller.endpoint, exc.message)
                await asyncio.sleep(RETRY_SECONDS)

    async def _notifications(self) -> None:
        gateway = self._poller.gateway
        changed = self._changed["notifications"]
        while True:
            patterns = await self._wait_for_patterns("notifications")
            changed.clear()
            try:
                flags = await notification_flags(gateway)
                mode = notification_mode(flags)
                subscription = await subscribe(gateway, patterns, mode)
                # Told only once subscribed: a key made before the subscription is active (on a
                # cluster, on every primary) is never notified, and a reader of ``mode`` would
                # wrongly count on it.
                self.flags, self.mode = flags, mode
            except GatewayError as exc:
                logger.debug("notifications of %s: %s", self._poller.endpoint, exc.message)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if subscription is None:  # off: look again later, or when the patterns change
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), CONFIG_RECHECK_SECONDS)
                continue
            recheck = time.monotonic() + CONFIG_RECHECK_SECONDS
            try:
                while not changed.is_set():
                    keys = await subscription.next_keys(1.0)
                    if keys:
                        await self.offer(keys, "notification")
                    if self.mode is NotificationMode.UNKNOWN and time.monotonic() > recheck:
                        break
            except Exception as exc:  # a dropped connection: subscribe again
                logger.debug("notifications of %s: %s", self._poller.endpoint, exc)
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await subscription.close()

    @property
    def absent(self) -> list[str]:
        """Candidates that held no stream when checked, still within their grace."""
        return list(self._absent)

    async def _recheck_absent(self) -> None:
        while True:
            if not self._absent:
                self._absent_changed.clear()
                await self._absent_changed.wait()
            await asyncio.sleep(ABSENT_RECHECK_SECONDS)
            now = time.monotonic()
            for key, since in list(self._absent.items()):
                if now - since >= self.absent_grace or self._poller.knows(key):
                    del self._absent[key]  # learned meanwhile, or never written (SCAN remains)
            keys = list(self._absent)[:ABSENT_CHECKS_PER_ROUND]
            if keys:
                try:
                    await self.offer(keys, "registry")
                except GatewayError as exc:  # the polls report Redis trouble
                    logger.debug("absent keys of %s: %s", self._poller.endpoint, exc.message)

    async def offer(self, keys: Iterable[str], path: str) -> list[str]:
        """Candidate keys from one path: those matching a pattern, not known yet and existing
        as streams join the key sets, and the endpoint is polled at once. Returns them. The
        others are kept for a recheck within their grace."""
        poller = self._poller
        patterns = poller.patterns()
        candidates = [
            key
            for key in dict.fromkeys(keys)
            if key != REGISTRY_KEY
            and not is_auxiliary(key)
            and not poller.knows(key)
            and any(glob_match(pattern, key) for pattern in patterns)
        ]
        if not candidates:
            return []
        types = await key_types(poller.gateway, candidates)
        found = [key for key, kind in types.items() if kind == "stream"]
        now = time.monotonic()
        for key, kind in types.items():
            if kind != "none":  # a stream, or a key of another type: nothing to wait for
                self._absent.pop(key, None)
            elif key not in self._absent:
                self._absent[key] = now
                self._absent_changed.set()
        for key in found:
            for pattern in patterns:
                if glob_match(pattern, key):
                    poller.learn(pattern, key)
        if found:
            poller.discovered(path, len(found))
            poller.poll_now(poller.pattern_subscribers())
        return found
