"""Which streams a consumer reads: one key, or every stream matching a pattern (thousands of
call streams), and which of them are worth reading now.

How keys are learned, in O(new keys):
- at start, one ``SCAN MATCH <pattern> TYPE stream`` learns the streams that exist (the only
  keyspace scan; the registry position is taken first, so a stream created during the scan
  is learned from the registry);
- then the registry of new streams (``streamherd.keys.REGISTRY_KEY``), read from this
  consumer's own position: every ``publish`` of the SDK announces a key the first time it
  writes to it;
- a learned key is read once it has the group (the operator creates it): until then it is
  checked with ``XINFO GROUPS``, backing off to every ``MAX_BACKOFF`` seconds. A key with no
  stream (a check says "no such key") is checked the same way for ``ABSENT_GRACE`` seconds,
  then forgotten: an announcement may come before the stream's first entry (a publisher
  that registers first), and a forgotten key is never learned again. A key of another type
  is forgotten at once.

Streams that returned entries within ``active_window`` seconds (and newly learned ones) are
*active*: read every time round. The others are *dormant*: swept for entries every few
seconds (``Consumer``), so thousands of finished calls cost little.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rx

from streamherd.consumer.settings import AnyRedis
from streamherd.consumer.topology import read_streams
from streamherd.keys import (
    ANNOUNCED_KEY_GRACE,
    REGISTRY_FIELD,
    REGISTRY_KEY,
    glob_match,
    is_auxiliary,
)

logger = logging.getLogger("streamherd.consumer")

FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
"""Seconds between checks of a learned stream that has no group yet: from the first to the
most, doubling."""
ABSENT_GRACE = ANNOUNCED_KEY_GRACE
"""Seconds a pattern's key with no stream is still checked before it is forgotten."""
REGISTRY_READ = 1000
"""Registry entries read per call (a few calls per refresh catch up on a burst)."""
CHECKS_PER_CALL = 500
"""``XINFO GROUPS`` calls in one pipeline."""


@dataclass
class _Waiting:
    next_check: float
    backoff: float
    absent_since: float | None = None
    """When a check first found no stream under the key (None: it exists, or not checked)."""


class StreamSet:
    """The streams one consumer follows, and when each last had entries. Bookkeeping only.

    ``key``: one stream, always active. ``pattern``: every matching stream that is not an
    auxiliary key (dead-letter streams, the registry)."""

    def __init__(
        self,
        *,
        key: str | None = None,
        pattern: str | None = None,
        active_window: float = 10.0,
        absent_grace: float = ABSENT_GRACE,
    ) -> None:
        if (key is None) == (pattern is None):
            raise ValueError("follow exactly one of a key and a pattern")
        self.key, self.pattern, self.active_window = key, pattern, active_window
        self.absent_grace = absent_grace
        self._last_data: dict[str, float] = {}
        """Followed streams (they have the group), in the order learned: when each last had
        entries (or was learned). Insertion order keeps round-robin reads fair."""
        self._waiting: dict[str, _Waiting] = {}
        self._schedule: list[tuple[float, int, str, _Waiting]] = []
        """The waiting keys by next check (a heap): ``due`` and ``next_check`` cost O(log n)
        per key, not a scan of every waiting key each step (the absent grace keeps deleted
        calls' keys waiting for a while). What keeps it right: every change of ``_waiting``
        goes through ``_wait`` (which pushes) or removes the key; an entry whose ``_Waiting``
        is no longer the key's current one is stale and dropped when it reaches the top."""
        self._order = itertools.count()
        self._active: list[str] = []
        self._active_set: set[str] = set()
        self._active_until = -1.0
        """When the active list must be rebuilt (the first of its keys to go dormant)."""

    def matches(self, key: str) -> bool:
        if self.key is not None:
            return key == self.key
        assert self.pattern is not None
        return not is_auxiliary(key) and glob_match(self.pattern, key)

    @property
    def followed(self) -> list[str]:
        return list(self._last_data)

    def is_followed(self, key: str) -> bool:
        return key in self._last_data

    @property
    def waiting(self) -> list[str]:
        return list(self._waiting)

    def _wait(self, key: str, waiting: _Waiting) -> None:
        self._waiting[key] = waiting
        heapq.heappush(self._schedule, (waiting.next_check, next(self._order), key, waiting))

    def _drop_stale(self) -> None:
        while (
            self._schedule and self._waiting.get(self._schedule[0][2]) is not self._schedule[0][3]
        ):
            heapq.heappop(self._schedule)

    def offer(self, keys: Iterable[str], now: float) -> int:
        """Candidates (from the scan or the registry): unknown matching ones are checked next."""
        added = 0
        for key in keys:
            if key not in self._last_data and key not in self._waiting and self.matches(key):
                self._wait(key, _Waiting(now, 0.0))
                added += 1
        return added

    def due(self, now: float, limit: int = CHECKS_PER_CALL) -> list[str]:
        """The keys whose check is due, earliest first (at most ``limit``). They stay waiting
        until the caller says what the check found."""
        taken: list[tuple[float, int, str, _Waiting]] = []
        self._drop_stale()
        while self._schedule and len(taken) < limit and self._schedule[0][0] <= now:
            taken.append(heapq.heappop(self._schedule))
            self._drop_stale()
        for entry in taken:
            heapq.heappush(self._schedule, entry)
        return [key for _, _, key, _ in taken]

    def next_check(self) -> float | None:
        self._drop_stale()
        return self._schedule[0][0] if self._schedule else None

    def follow(self, key: str, now: float) -> None:
        """The stream has the group: read it (it counts as active: a new call talks)."""
        self._waiting.pop(key, None)
        self._last_data[key] = now
        self._mark_active(key)

    def without_group(self, key: str, now: float) -> None:
        """The stream exists but the group does not (yet): check again, less and less often."""
        if key in self._last_data:
            del self._last_data[key]
            self._drop_active(key)
        waiting = self._waiting.get(key)
        backoff = (
            min(waiting.backoff * 2, MAX_BACKOFF) if waiting and waiting.backoff else FIRST_BACKOFF
        )
        self._wait(key, _Waiting(now + backoff, backoff))

    def absent(self, key: str, now: float) -> None:
        """A check found no stream under the key: a pattern's key is checked again (backing
        off) until it has been absent for ``absent_grace``, then forgotten; the one named key
        is waited for however long it takes."""
        waiting = self._waiting.get(key)
        since = waiting.absent_since if waiting is not None else None
        if self.pattern is not None and since is not None and now - since >= self.absent_grace:
            self.forget(key)
            return
        self.without_group(key, now)
        self._waiting[key].absent_since = now if since is None else since  # same entry: no push

    def recheck(self, key: str, now: float) -> None:
        """A read said NOGROUP for this stream: check it before reading it again."""
        if key in self._last_data:
            del self._last_data[key]
            self._drop_active(key)
        self._wait(key, _Waiting(now, 0.0))

    def forget(self, key: str) -> None:
        """The stream is gone (or not a stream)."""
        self._waiting.pop(key, None)
        if self._last_data.pop(key, None) is not None:
            self._drop_active(key)

    def heard(self, keys: Iterable[str], now: float) -> None:
        """Keyspace events said these streams got an entry or a group: followed ones are
        active, waiting ones are checked now, unknown matching ones are learned."""
        for key in keys:
            if key in self._last_data:
                self.touch([key], now)
            elif key in self._waiting:
                self._wait(key, _Waiting(now, 0.0))
            else:
                self.offer([key], now)

    def touch(self, keys: Iterable[str], now: float) -> None:
        """These streams just had entries."""
        for key in keys:
            if key in self._last_data:
                self._last_data[key] = now
                self._mark_active(key)

    def active(self, now: float) -> list[str]:
        """Streams that had entries within ``active_window`` (or were just learned), in a
        stable order; the single key of a one-stream consumer always."""
        if self.key is not None:
            return [self.key] if self.key in self._last_data else []
        if now >= self._active_until:
            since = now - self.active_window
            self._active = [k for k, t in self._last_data.items() if t > since]
            self._active_set = set(self._active)
            oldest = min((self._last_data[k] for k in self._active), default=now)
            # Rebuilt when its oldest key goes dormant, at most twice a second.
            self._active_until = max(oldest + self.active_window, now + 0.5)
        return self._active

    def dormant(self, now: float) -> list[str]:
        active = set(self.active(now))
        return [k for k in self._last_data if k not in active]

    def _mark_active(self, key: str) -> None:
        if key not in self._active_set:
            self._active.append(key)
            self._active_set.add(key)

    def _drop_active(self, key: str) -> None:
        if key in self._active_set:
            self._active_set.discard(key)
            self._active.remove(key)


class Following:
    """Learns the streams of a ``StreamSet`` from Redis: the start-up scan, the registry, and
    the group checks. ``refresh`` costs one registry read (when due) and one pipeline of
    checks for streams waiting for their group."""

    def __init__(
        self,
        redis: AnyRedis,
        group: str,
        streams: StreamSet,
        *,
        registry_interval: float = 0.2,
    ) -> None:
        self.redis, self.group, self.streams = redis, group, streams
        self.registry_interval = registry_interval
        self.position: str | None = None
        """Where this consumer is in the registry (None: one key, no registry)."""
        self._next_registry_read = 0.0

    async def start(self, now: float) -> None:
        if self.streams.pattern is None:
            assert self.streams.key is not None
            self.streams.offer([self.streams.key], now)
        else:
            last: Any = await self.redis.xrevrange(REGISTRY_KEY, "+", "-", count=1)
            self.position = last[0][0] if last else "0-0"
            found: list[str] = []
            async for key in self.redis.scan_iter(
                match=self.streams.pattern, count=1000, _type="stream"
            ):
                found.append(key)
            self.streams.offer(found, now)
        await self.check_due(now)

    async def refresh(self, now: float, *, registry: bool = True) -> None:
        """Registry entries since this consumer's position (unless ``registry`` is False:
        someone else reads it, see ``waking``), then the due group checks."""
        if registry and self.position is not None and now >= self._next_registry_read:
            self._next_registry_read = now + self.registry_interval
            for _ in range(10):  # bounded: the rest next time
                reply = await read_streams(
                    self.redis, ("XREAD",), {REGISTRY_KEY: self.position}, count=REGISTRY_READ
                )
                for _, exc in reply.failed:
                    raise exc
                items = reply.items[0][1] if reply.items else []
                self.learn(items, now)
                if len(items) < REGISTRY_READ:
                    break
        await self.check_due(now)

    def learn(self, registry_entries: Sequence[tuple[str, dict[str, str]]], now: float) -> None:
        """Registry entries (read by ``refresh`` or by a wait that included the registry)."""
        if registry_entries:
            self.position = registry_entries[-1][0]
            self.streams.offer((f.get(REGISTRY_FIELD, "") for _, f in registry_entries), now)

    async def check_due(self, now: float) -> None:
        due = self.streams.due(now)
        if due:
            await self.check(due, now)

    async def check(self, keys: Sequence[str], now: float) -> None:
        """``XINFO GROUPS`` on each key (one pipeline): follow it, wait for its group, or
        forget it."""
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.xinfo_groups(key)
        for key, reply in zip(keys, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, rx.ConnectionError | rx.TimeoutError):
                raise reply
            if isinstance(reply, Exception):
                text = str(reply).lower()
                if "no such key" in text:
                    self.streams.absent(key, now)
                elif "wrongtype" in text:
                    if self.streams.pattern is not None:
                        self.streams.forget(key)
                    else:  # the one named key: wait for it to be created (or fixed)
                        self.streams.without_group(key, now)
                else:
                    logger.warning("cannot check stream %s: %s", key, reply)
                    self.streams.without_group(key, now)
            elif any(g["name"] == self.group for g in reply):
                self.streams.follow(key, now)
            else:
                self.streams.without_group(key, now)
