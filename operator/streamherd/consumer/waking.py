"""How a pattern consumer on Redis Cluster waits for work without a connection per slot.

On one server the wait is one blocking ``XREAD`` over the registry and the active streams
(``worker``). On a cluster a blocking read covers one hash slot (``topology``), and call
streams are in all of them, so ``ClusterWaker`` rings a bell instead:

- **the registry** of new streams (one key, one slot) is read by one long-lived blocking
  ``XREAD`` of its own, re-issued each time it returns and never cancelled to be restarted
  (a second connection, to the registry's node): a new call wakes the consumer at once, and
  this is how a cluster consumer learns new keys;
- **keyspace notifications**, where every primary's ``notify-keyspace-events`` has them
  (``K`` or ``E``, with ``t`` or ``A``): one subscription (one pubsub connection) per
  primary, ``PSUBSCRIBE __keyspace@0__:<pattern>`` (filtered by Redis) or the ``xadd`` and
  ``xgroup-create`` key events (filtered here). An entry on any stream, or a group created
  on one, wakes the consumer at once, and a stream written by a publisher that does not
  register itself is learned too. Topology changes are followed (primaries are compared every
  ``TOPOLOGY_CHECK`` seconds and on any error); while a primary is not subscribed, the
  consumer polls as below;
- **without notifications** the active streams are read again after a pause that doubles
  while nothing comes (``POLL_MIN`` up to the consumer's ``block``) and is back at
  ``POLL_MIN`` as soon as a read returns entries (``worker``).

Connections: one per node for the consumer's commands (it sends one at a time), one more to
the registry's node, and with notifications one pubsub connection per primary, whatever the
number of streams and slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode, RedisCluster

from streamherd.consumer.topology import TRANSIENT, read_streams
from streamherd.keys import REGISTRY_KEY, glob_match
from streamherd.tasks import cancelled

logger = logging.getLogger("streamherd.consumer")

REGISTRY_BLOCK_MS = 2000
"""The registry read's ``BLOCK`` (below redis-py's 5 s socket timeout)."""
REGISTRY_READ = 100
"""Registry entries one read returns (it is re-issued at once when there are more)."""
REGISTRY_BACKLOG = 10_000
"""Registry entries held for the consumer at most; reading pauses until it takes them."""
POLL_MIN = 0.01
"""Seconds before the first re-read of the active streams without notifications."""
TOPOLOGY_CHECK = 30.0
"""Seconds between comparisons of the subscribed primaries with the cluster's."""
HEALTH_CHECK = 10.0
"""Seconds of silence on a subscription before a PING checks it (no answer: resubscribed)."""
EVENTS = frozenset({"xadd", "xgroup-create"})
"""Keyspace events that ring: an entry, and a group created (a waiting stream is ready)."""

Plan = tuple[str, Any]
"""What to subscribe to: ``("pattern", channel)`` or ``("channels", [channel, ...])``."""
Message = dict[str, Any]


def notification_channels(flags: Sequence[str], pattern: str) -> Plan | None:
    """What to subscribe to on every primary, given each one's ``notify-keyspace-events``:
    keyspace events of the followed keys (``K``, filtered by Redis), else the stream key events
    of every stream (``E``, filtered here); None when some primary publishes neither, or
    ``CONFIG`` could not be read (``flags`` empty)."""

    def streams(f: str) -> bool:
        return "t" in f or "A" in f  # A: every class but n and m

    if flags and all("K" in f and streams(f) for f in flags):
        return ("pattern", f"__keyspace@0__:{pattern}")
    if flags and all("E" in f and streams(f) for f in flags):
        return ("channels", [f"__keyevent@0__:{e}" for e in sorted(EVENTS)])
    return None


class ClusterWaker:
    """The bell a cluster consumer waits on (see the module). What rang is collected here and
    taken by the consumer's loop (``take``), the only writer of its stream bookkeeping."""

    def __init__(self, redis: RedisCluster, *, pattern: str) -> None:
        self.redis, self.pattern = redis, pattern
        self._bell = asyncio.Event()
        self._taken = asyncio.Event()
        self._registry: list[tuple[str, dict[str, str]]] = []
        self._keys: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed: set[str] = set()
        self._primaries: set[str] = set()
        self._following = False
        self.notifications: str | None = None
        """How notifications reach it (``pattern``/``channels``), None without them."""

    # ------------------------------------------------------------------ lifecycle

    def follow_registry(self, position: str) -> None:
        """Read the registry from ``position`` on (once: a restarted start-up keeps it)."""
        if not self._following:
            self._following = True
            self._spawn(self._follow_registry(position), "registry")

    async def start_notifications(self) -> bool:
        """Subscribe on every primary if all of them publish stream events; say whether."""
        flags = await self._notification_flags()
        plan = notification_channels(flags or [], self.pattern)
        if plan is None:
            logger.info(
                "no keyspace notifications for streams (notify-keyspace-events=%s): active "
                "streams are polled while quiet",
                flags,
            )
            return False
        self.notifications = plan[0]
        self._spawn(self._notify(plan), "notifications")
        return True

    async def close(self) -> None:
        """Stop the registry's read and the subscriptions, and wait until they have stopped
        (re-cancelled: redis-py may swallow a cancellation, ``tasks.cancelled``)."""
        tasks, self._tasks = self._tasks, []
        await cancelled(*tasks)

    def _spawn(self, coroutine: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=f"streamherd waker {name}"))

    # ------------------------------------------------------------------ waiting

    @property
    def notified(self) -> bool:
        """Every primary is subscribed: an entry anywhere rings (no polling needed)."""
        return bool(self._primaries) and self._subscribed >= self._primaries

    async def wait(self, seconds: float, stop: asyncio.Event) -> None:
        """Until the bell rings, ``stop`` is set, or ``seconds`` pass."""
        if self._bell.is_set() or stop.is_set():
            return
        bell, stopped = (asyncio.ensure_future(e.wait()) for e in (self._bell, stop))
        try:
            await asyncio.wait({bell, stopped}, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for waiter in (bell, stopped):
                waiter.cancel()

    def take(self) -> tuple[list[tuple[str, dict[str, str]]], set[str]]:
        """What rang since the last call: registry entries, and keys with events."""
        registry, keys = self._registry, self._keys
        self._registry, self._keys = [], set()
        self._bell.clear()
        self._taken.set()
        return registry, keys

    def ring(self) -> None:
        self._bell.set()

    # ------------------------------------------------------------------ the registry

    async def _follow_registry(self, position: str) -> None:
        backoff = 0.1
        while True:
            if len(self._registry) >= REGISTRY_BACKLOG:
                self._taken.clear()
                await self._taken.wait()
                continue
            try:
                reply = await read_streams(
                    self.redis,
                    ("XREAD",),
                    {REGISTRY_KEY: position},
                    count=REGISTRY_READ,
                    block=REGISTRY_BLOCK_MS,
                )
            except (rx.ConnectionError, rx.TimeoutError, OSError, *TRANSIENT) as exc:
                logger.debug("registry read: %s; again in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            for _, refusal in reply.failed:  # e.g. an ACL without the registry, a wrong type
                logger.warning("cannot read %s: %s", REGISTRY_KEY, refusal)
                await asyncio.sleep(REGISTRY_BLOCK_MS / 1000)
            for _, items in reply.items:
                if items:
                    position = items[-1][0]
                    self._registry.extend(items)
                    self._bell.set()

    # ------------------------------------------------------------------ notifications

    async def _notification_flags(self) -> list[str] | None:
        try:
            reply: Any = await self.redis.config_get(
                "notify-keyspace-events", target_nodes=RedisCluster.PRIMARIES
            )
        except rx.RedisError as exc:  # CONFIG not allowed (managed services): unknown
            logger.info("cannot read notify-keyspace-events: %s", exc)
            return None
        if isinstance(reply, dict) and "notify-keyspace-events" in reply:
            return [str(reply["notify-keyspace-events"] or "")]
        return [str((v or {}).get("notify-keyspace-events") or "") for v in reply.values()]

    async def _notify(self, plan: Plan) -> None:
        """Listeners on every primary, restarted when the primaries change or one fails (or
        the slot map cannot be read), after a pause that doubles while they keep failing."""
        backoff = 0.1
        while True:
            try:
                failure = await self._listen_to_primaries(plan)
            except (rx.RedisError, OSError) as exc:  # the slot map, or the primaries, unreadable
                failure = exc
            if failure is not None:
                logger.debug("notifications: %s; again in %.1fs", failure, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1
            self._bell.set()  # whatever happened while unsubscribed is read now

    async def _listen_to_primaries(self, plan: Plan) -> BaseException | None:
        """One listener per current primary, until one fails (its error is returned) or the
        primaries change (None). Every listener has stopped when this returns: one that went
        on (redis-py swallowed its cancellation) would hold a subscription nobody reads, and
        waiting for it with a single cancellation would wait for ever."""
        await self.redis.initialize()
        primaries = {n.name: n for n in self.redis.get_primaries()}
        self._primaries = set(primaries)
        listeners = [
            asyncio.create_task(self._listen(node, plan), name=f"streamherd notify {name}")
            for name, node in primaries.items()
        ]
        try:
            while True:
                done, _ = await asyncio.wait(
                    listeners, timeout=TOPOLOGY_CHECK, return_when="FIRST_COMPLETED"
                )
                if done:
                    failed = next(iter(done))
                    error = None if failed.cancelled() else failed.exception()
                    return error or rx.ConnectionError(f"{failed.get_name()} stopped")
                if {n.name for n in self.redis.get_primaries()} != set(primaries):
                    return None
        finally:
            await cancelled(*listeners)
            self._subscribed.clear()

    async def _listen(self, node: ClusterNode, plan: Plan) -> None:
        how, channels = plan
        pubsub = self.redis.pubsub(node=node)
        try:
            if how == "pattern":
                await pubsub.psubscribe(channels)
            else:
                await pubsub.subscribe(*channels)
            unanswered = False
            while True:
                message = await pubsub.get_message(timeout=HEALTH_CHECK)
                if message is None:  # quiet: is the connection still there?
                    if unanswered:
                        raise rx.ConnectionError(f"no answer to PING from {node.name}")
                    await pubsub.ping()
                    unanswered = True
                    continue
                unanswered = False
                kind = message.get("type")
                if kind in ("psubscribe", "subscribe"):
                    # Confirmed: an entry from now on rings. One added before it is read
                    # by the round this bell starts.
                    self._subscribed.add(node.name)
                    self._bell.set()
                elif kind in ("pmessage", "message"):
                    self._heard(message)
        finally:
            self._subscribed.discard(node.name)
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _heard(self, message: Message) -> None:
        channel, data = str(message.get("channel") or ""), str(message.get("data") or "")
        if channel.startswith("__keyspace@"):
            key, event = channel.split(":", 1)[1], data
        else:
            key, event = data, channel.rsplit(":", 1)[-1]
        if event in EVENTS and glob_match(self.pattern, key):
            self._keys.add(key)
            self._bell.set()
