"""``Consumer``: the consumer contract's loop, around a handler you write.

What it does, in order:
1. learns its streams (``following``) and reads its own pending history (entries it held
   before a restart, entries the janitor claimed to it);
2. reads new entries (``>``) of its active streams, round-robin, and sweeps dormant streams
   every ``sweep_interval``; reads its history again every ``history_interval`` (the Claim
   strategy hands stale work to live consumers: they must read it);
3. calls the handler per entry (or per batch), acknowledges what succeeded, and leaves what
   failed pending: no retry loop of its own. A history read hands a failed entry over again
   (Redis counts that delivery), and the janitor dead-letters it after ``maxDeliveries``;
4. on ``stop()`` (SIGTERM under ``run_forever``) it finishes the batch in hand, acknowledges
   it, stops reading, and returns (exit code 0).

Bounded reads: ``COUNT`` is per stream, so one read names at most ``batch`` streams with
``COUNT = batch // streams``: a read never returns more than ``batch`` entries, however many
streams it covers (what a read returns must be processed before it goes stale at minIdle).
Waiting costs one blocking call: ``XREADGROUP BLOCK`` on one stream; for a pattern, a
non-delivering ``XREAD BLOCK`` on the registry and the active streams. On Redis Cluster a read
over many streams is one ``XREADGROUP`` per hash slot, pipelined per node (``topology``), and
a pattern consumer waits on a bell (``waking``): the registry's own blocking read, keyspace
notifications where the server publishes them, else a re-read of the active streams after a
growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rx

from streamherd.consumer.client import HISTORY, NEW, Read, StreamClient
from streamherd.consumer.entries import Entry
from streamherd.consumer.following import Following, StreamSet
from streamherd.consumer.settings import Settings, require_text
from streamherd.consumer.topology import TRANSIENT, is_cluster, read_streams
from streamherd.consumer.waking import POLL_MIN, ClusterWaker
from streamherd.keys import REGISTRY_KEY

logger = logging.getLogger("streamherd.consumer")

Handler = Callable[[Entry], Awaitable[object]] | Callable[[Entry], object]
"""Called once per delivered entry; returning is success (acknowledged), raising is failure
(left pending). A plain function runs in a worker thread, a coroutine function on the loop."""
BatchHandler = (
    Callable[[list[Entry]], Awaitable[Iterable[Entry] | None]]
    | Callable[[list[Entry]], Iterable[Entry] | None]
)
"""Called once per batch; returns the entries that failed (None: all succeeded); raising
fails the whole batch."""

WAKE_READ = 100
"""Registry entries a wait returns (more are read by the next refresh)."""
PROBE_PIPELINE = 1000
"""Streams probed for this consumer's pending entries per round trip."""


@dataclass
class Stats:
    """What a consumer has done since it started."""

    handed: int = 0
    """Entries given to the handler."""
    acked: int = 0
    failed: int = 0
    """Handler failures, left pending."""
    foreign_acked: int = 0
    """Copies re-queued for another group: acknowledged, never handed to the handler."""
    deleted_acked: int = 0
    """History entries whose stream entry was gone: acknowledged."""
    history_reads: int = 0
    reads: int = 0


class Consumer:
    """Reads a stream (or every stream of a pattern) as one consumer of a group and calls
    your handler. ``client`` carries the group and the consumer name.

    ``batch``: at most this many entries per read. ``history_interval`` (seconds): how often
    to read this consumer's own pending entries; None: never, not even at start (a plain
    ``>`` reader, as the seed article's loop). ``block`` (seconds): longest wait per read.
    ``active_window``/``sweep_interval``: see ``following``."""

    def __init__(
        self,
        client: StreamClient,
        *,
        stream: str | None = None,
        pattern: str | None = None,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        batch: int = 10,
        history_interval: float | None = 1.0,
        block: float = 0.5,
        active_window: float = 10.0,
        sweep_interval: float = 5.0,
        registry_interval: float = 0.2,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        if client.group is None or client.consumer is None:
            raise ValueError("the client needs a group and a consumer name")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        require_text(client.redis)
        self.client, self.group, self.name = client, client.group, client.consumer
        self.streams = StreamSet(key=stream, pattern=pattern, active_window=active_window)
        self.following = Following(
            client.redis, client.group, self.streams, registry_interval=registry_interval
        )
        self._handler, self._batch_handler = handler, batch_handler
        self._handler_is_async = inspect.iscoroutinefunction(handler or batch_handler)
        self.batch, self.history_interval, self.block = batch, history_interval, block
        self.sweep_interval = sweep_interval
        self.stats = Stats()
        self._stop = asyncio.Event()
        self._cursor = 0
        self._sweep: list[str] | None = None
        self._sweep_at = 0
        self._next_sweep = 0.0
        self._next_history = 0.0
        self._next_full_history = 0.0
        self._holding: set[str] = set()
        """Streams where this consumer held pending entries at the last look (or just left a
        failure): probed every history read. The others every ``sweep_interval``."""
        redis = client.redis
        self.waker = (
            ClusterWaker(redis, pattern=pattern)
            if is_cluster(redis) and pattern is not None
            else None
        )
        """Redis Cluster and a pattern: the bell its waits wait on (``waking``); else None."""
        self._pause = POLL_MIN
        """Cluster without notifications: the pause before re-reading the active streams."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        **options: Any,
    ) -> Consumer:
        return cls(
            StreamClient.from_settings(settings),
            stream=settings.stream,
            pattern=settings.pattern,
            handler=handler,
            batch_handler=batch_handler,
            **options,
        )

    @classmethod
    def from_env(
        cls,
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        environ: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Consumer:
        """Configured as the operator configures consumer pods (``Settings.from_env``)."""
        return cls.from_settings(
            Settings.from_env(environ), handler, batch_handler=batch_handler, **options
        )

    # ------------------------------------------------------------------ running

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Finish the batch in hand, acknowledge it, and return from ``run``."""
        self._stop.set()

    def run_forever(self) -> int:
        """Run until SIGTERM or SIGINT, then close the connection; returns 0 (an exit code)."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            try:
                await self.run()
            finally:
                await self.client.close()

        asyncio.run(main())
        return 0

    async def run(self) -> None:
        """Consume until ``stop()``. Redis being unavailable is waited out (with backoff),
        never fatal; so is an error on one stream."""
        started, backoff = False, 0.1
        try:
            while not self.stopping:
                try:
                    if not started:
                        await self._start()
                        started = True
                    await self._step()
                    backoff = 0.1
                except (rx.ConnectionError, rx.TimeoutError, OSError, *TRANSIENT) as exc:
                    logger.warning(
                        "%s: Redis unavailable (%s); again in %.1fs", self.name, exc, backoff
                    )
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                except rx.ResponseError as exc:
                    logger.error("%s: %s; again in %.1fs", self.name, exc, backoff)
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            if self.waker is not None:
                await self.waker.close()
        logger.info("%s stopped: %s", self.name, self.stats)

    async def _start(self) -> None:
        now = time.monotonic()
        if self.waker is not None and self.waker.notifications is None:
            # Subscribed before the first read: an entry after it rings, none is missed.
            await self.waker.start_notifications()
        await self.following.start(now)
        if self.waker is not None and self.following.position is not None:
            self.waker.follow_registry(self.following.position)
        logger.info(
            "%s consuming %s as group %s: %d streams",
            self.name,
            self.streams.key or self.streams.pattern,
            self.group,
            len(self.streams.followed),
        )
        self._next_sweep = now + self.sweep_interval
        if self.history_interval is not None:
            await self._read_history(now)  # what we held before a restart, first
            self._next_history = time.monotonic() + self.history_interval

    async def _step(self) -> None:
        now = time.monotonic()
        await self.following.refresh(now, registry=self.waker is None)
        if self.history_interval is not None and now >= self._next_history:
            await self._read_history(now)
            self._next_history = time.monotonic() + self.history_interval
            return
        if now >= self._next_sweep:
            swept = await self._sweep_some(now)
            if swept or self.stopping:
                await self._handle(swept)
                return
        entries = await self._read_active(now)
        if not entries and not self.stopping:
            entries = await self._wait(now)
        await self._handle(entries)

    # ------------------------------------------------------------------ reading

    async def _read_new(self, keys: Sequence[str], block: int | None = None) -> list[Entry]:
        """One bounded ``>`` read of at most ``batch`` streams. Streams Redis refused (no
        group, deleted while waited on, no stream any more) are checked before the next."""
        count = max(1, self.batch // len(keys))
        read = await self.client.read(dict.fromkeys(keys, NEW), count=count, block=block)
        self._lost(read.missing)
        self._account(read)
        return read.entries

    async def _read_active(self, now: float) -> list[Entry]:
        """Round-robin over the active streams, ``batch`` streams a read, until one read
        returns entries or every active stream was read once."""
        active = self.streams.active(now)
        for _ in range(-(-len(active) // self.batch)):
            if self.stopping or not active:
                break
            start = self._cursor % len(active)
            chunk = active[start : start + self.batch]
            self._cursor = start + len(chunk)
            entries = await self._read_new(chunk)
            if entries:
                return entries
            active = self.streams.active(now)
        return []

    async def _sweep_some(self, now: float, reads: int = 10) -> list[Entry]:
        """Part of the sweep of dormant streams: up to ``reads`` reads per step, so a busy
        consumer still gets round to streams that went quiet and spoke again."""
        if self._sweep is None:
            self._sweep, self._sweep_at = self.streams.dormant(now), 0
        for _ in range(reads):
            if self._sweep_at >= len(self._sweep):
                self._sweep, self._next_sweep = None, time.monotonic() + self.sweep_interval
                return []
            chunk = [
                k
                for k in self._sweep[self._sweep_at : self._sweep_at + self.batch]
                if self.streams.is_followed(k)
            ]
            self._sweep_at += self.batch
            if chunk:
                entries = await self._read_new(chunk)
                if entries:
                    return entries
        return []

    async def _wait(self, now: float) -> list[Entry]:
        """Block until something may have arrived (at most ``block`` seconds, less when a
        group check, the sweep or the history read is due). One stream: ``XREADGROUP
        BLOCK``. A pattern: ``XREAD BLOCK`` (it delivers nothing) on the registry and the
        active streams (``$``), so a new call wakes it too; the next round reads what
        spoke. An entry that lands between the round's read of its stream and this wait is
        read at the next wake-up (at most ``block`` later)."""
        deadlines = [now + self.block, self._next_sweep]
        if self.history_interval is not None:
            deadlines.append(self._next_history)
        check = self.streams.next_check()
        if check is not None:
            deadlines.append(check)
        wait_ms = max(1, int((min(deadlines) - now) * 1000))
        active = self.streams.active(now)
        if self.following.position is None:
            if active:  # one key: one slot, on a cluster too
                return await self._read_new(active, block=wait_ms)
            await self._sleep(wait_ms / 1000)
            return []
        if self.waker is not None:
            await self._wait_for_bell(self.waker, wait_ms / 1000, active)
            return []
        watch = {REGISTRY_KEY: self.following.position, **dict.fromkeys(active, "$")}
        reply = await read_streams(
            self.client.redis, ("XREAD",), watch, count=WAKE_READ, block=wait_ms
        )
        if reply.failed:  # a key that is no stream any more: the checks sort out which
            self._lost(active)
        for key, items in reply.items:
            if key == REGISTRY_KEY:
                self.following.learn(items, time.monotonic())
            else:  # read it first in the next round
                self.streams.touch([key], time.monotonic())
                self._cursor = active.index(key) if key in active else self._cursor
        return []

    async def _wait_for_bell(self, waker: ClusterWaker, longest: float, active: list[str]) -> None:
        """Redis Cluster, a pattern (``waking``): until the registry or a notification rings,
        at most ``longest`` seconds; without notifications, at most the pause before the
        active streams are read again, doubled each time nothing came."""
        polling = not waker.notified
        await waker.wait(min(longest, self._pause) if polling else longest, self._stop)
        registry, keys = waker.take()
        now = time.monotonic()
        self.following.learn(registry, now)
        self.streams.heard(keys, now)
        first = next((active.index(k) for k in keys if k in set(active)), None)
        if first is not None:  # read it first in the next round
            self._cursor = first
        if polling and not registry and not keys:
            self._pause = min(self._pause * 2, self.block)

    async def _read_history(self, now: float) -> None:
        """This consumer's own pending entries: a pipelined probe (``XPENDING ... 1 <me>``,
        which delivers nothing and creates no consumer) finds the streams that hold any, and
        they are read from id 0 in bounded batches. Probed: active streams and those where
        it held entries; every stream once per ``sweep_interval`` (the janitor may claim
        entries to it on any stream: an entry claimed to it stays there for minIdle)."""
        self.stats.history_reads += 1
        if now >= self._next_full_history:
            probe = self.streams.followed
            self._next_full_history = now + self.sweep_interval
        else:
            active = self.streams.active(now)
            probe = active + [k for k in self._holding if k not in set(active)]
        self._holding = set(await self._streams_holding_mine(probe))
        cursors = dict.fromkeys(self._holding, HISTORY)
        while cursors and not self.stopping:
            chunk = list(cursors)[: self.batch]
            count = max(1, self.batch // len(chunk))
            read = await self.client.read({k: cursors[k] for k in chunk}, count=count)
            self._lost(read.missing)
            for key in read.missing:
                cursors.pop(key, None)
            for key in chunk:
                if key not in cursors:
                    continue
                if read.returned.get(key, 0) < count:
                    del cursors[key]  # the end of our history there
                else:
                    cursors[key] = read.last_ids[key]
            self._account(read)
            await self._handle(read.entries)

    async def _streams_holding_mine(self, keys: Sequence[str]) -> list[str]:
        holding: list[str] = []
        redis = self.client.redis
        for i in range(0, len(keys), PROBE_PIPELINE):
            part = keys[i : i + PROBE_PIPELINE]
            pipe = redis.pipeline(transaction=False)
            for key in part:
                pipe.xpending_range(key, self.group, "-", "+", 1, consumername=self.name)
            for key, reply in zip(part, await pipe.execute(raise_on_error=False), strict=True):
                if isinstance(reply, rx.ConnectionError | rx.TimeoutError):
                    raise reply
                if isinstance(reply, Exception):
                    self._lost([key])
                elif reply:
                    holding.append(key)
        return holding

    def _account(self, read: Read) -> None:
        self.stats.reads += 1
        self.stats.foreign_acked += read.foreign_acked
        self.stats.deleted_acked += read.deleted_acked
        spoke = [k for k, n in read.returned.items() if n]
        if spoke:
            self.streams.touch(spoke, time.monotonic())
            self._pause = POLL_MIN

    def _lost(self, keys: Sequence[str]) -> None:
        """A read said these streams lack the group (or are gone): check before reading
        them again."""
        now = time.monotonic()
        for key in keys:
            self.streams.recheck(key, now)

    # ------------------------------------------------------------------ handling

    async def _handle(self, entries: list[Entry]) -> None:
        """The handler on every entry (even after ``stop()``: the batch in hand is finished),
        then acknowledgements for what succeeded."""
        if not entries:
            return
        self.stats.handed += len(entries)
        if self._batch_handler is not None:
            try:
                failed = await self._call(self._batch_handler, entries)
            except Exception as exc:
                logger.warning("%s: batch of %d failed: %r", self.name, len(entries), exc)
                failed = entries
            bad = {(e.stream, e.id) for e in failed or ()}
            self._holding.update(stream for stream, _ in bad)
            self.stats.failed += len(bad)
            done = [e for e in entries if (e.stream, e.id) not in bad]
            self.stats.acked += await self.client.ack_entries(done)
            return
        assert self._handler is not None
        for e in entries:
            try:
                await self._call(self._handler, e)
            except Exception as exc:
                self.stats.failed += 1
                self._holding.add(e.stream)
                logger.warning(
                    "%s: %s %s failed (delivery %d), left pending: %r",
                    self.name,
                    e.stream,
                    e.id,
                    e.deliveries,
                    exc,
                )
                continue
            self.stats.acked += await self.client.ack(e.stream, e.id)

    async def _call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        if self._handler_is_async:
            return await fn(arg)
        return await asyncio.to_thread(fn, arg)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
