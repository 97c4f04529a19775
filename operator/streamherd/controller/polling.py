"""One poller per Redis endpoint: every stream and group on it in one pipelined poll.

Resources subscribe with the stream they care about (a key or a pattern) and how often they
want it measured; the poller polls the union of all keys at the fastest interval asked for
and hands each result to every subscriber. 200 groups on one endpoint cost one poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamherd.controller.discovery import Discoverer
from streamherd.decisions.sampling import OldestMemory, age_sample, carry_oldest
from streamherd.gateway import GatewayError, GatewayPool, RedisGateway, ScanState
from streamherd.gateway.endpoint import Endpoint
from streamherd.keys import is_auxiliary, parse_id
from streamherd.metrics import Metrics
from streamherd.observations import Observation
from streamherd.tasks import cancelled

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0


@dataclass(frozen=True)
class Source:
    """What a RedisStream names: one key, or a glob over keys."""

    key: str | None = None
    pattern: str | None = None

    @property
    def text(self) -> str:
        return self.key if self.key is not None else str(self.pattern)


@dataclass(frozen=True)
class PollResult:
    seq: int
    observation: Observation
    keys: dict[Source, tuple[str, ...]] = field(default_factory=dict)
    discovery_complete: dict[Source, bool] = field(default_factory=dict)

    def keys_of(self, source: Source) -> tuple[str, ...]:
        return self.keys.get(source, ())


def pattern_streams(found: Iterable[str]) -> tuple[str, ...]:
    """The streams a key pattern names, sorted: the stream keys it matches, but for the
    auxiliary ones. A pattern like conv:* also matches conv:42:dlq: dead-letter (and other
    auxiliary) streams are never sources (a group on them would re-consume its own failures),
    and deleting a pattern's resources leaves them alone."""
    return tuple(sorted(key for key in found if not is_auxiliary(key)))


async def scan_pattern(gateway: RedisGateway, pattern: str) -> tuple[str, ...]:
    """The streams of ``pattern`` now, after a full SCAN pass: for one-off work over all of
    them (deletion, `streamherd janitor`); the poller discovers them a budget at a time."""
    return pattern_streams(await gateway.scan_all(pattern))


class Poller:
    def __init__(
        self,
        gateway: RedisGateway,
        metrics: Metrics,
        *,
        age_every: int = 5,
        scan_budget: int = 10_000,
        registry: bool = True,
        notifications: bool = True,
    ) -> None:
        self.gateway = gateway
        self._metrics = metrics
        self._age_every = age_every
        self._scan_budget = scan_budget
        self._subscriptions: dict[str, tuple[Source, float]] = {}
        self._lengths: dict[str, frozenset[str]] = {}
        """Per subscriber, other keys whose length each poll reads (dead-letter streams)."""
        self._scans: dict[str, ScanState] = {}
        self._result: PollResult | None = None
        self._oldest: OldestMemory = {}
        """The last measured oldest pending entry per (key, group), carried into the polls
        that do not measure it. Derived from Redis alone: a restart starts empty and the
        first poll of a key measures it, so nothing needs to survive a restart."""
        self._measured: set[str] = set()
        """Keys measured at least once (and still polled)."""
        self._measure_next: set[str] = set()
        """Keys with pending entries the last poll had no measurement for."""
        # Set (and replaced) on every publication: waiters need no lock, so cancelling one
        # can never leave it stuck re-acquiring one at shutdown.
        self._published = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stopped = False
        self._waker: Waker | None = None
        self.discoverer = Discoverer(self, registry=registry, notifications=notifications)

    @property
    def endpoint(self) -> str:
        return self.gateway.endpoint.display

    @property
    def interval(self) -> float:
        intervals = [interval for _, interval in self._subscriptions.values()]
        return min(intervals) if intervals else DEFAULT_INTERVAL

    @property
    def latest(self) -> PollResult | None:
        return self._result

    def poll_now(self) -> None:
        """Poll at once instead of at the next tick (something just happened)."""
        self._wake.set()

    def waker(self) -> Waker:
        if self._waker is None:
            self._waker = Waker(self)
        return self._waker

    def subscribe(self, who: str, source: Source, interval: float = DEFAULT_INTERVAL) -> None:
        previous = self._subscriptions.get(who)
        self._subscriptions[who] = (source, interval)
        if previous is None or previous[0] != source or previous[1] > interval:
            self._wake.set()  # something new to measure: poll now, not at the next tick
        if source.pattern is not None and (previous is None or previous[0] != source):
            self.discoverer.patterns_changed()

    def unsubscribe(self, who: str) -> None:
        previous = self._subscriptions.pop(who, None)
        self._lengths.pop(who, None)
        if previous is not None and previous[0].pattern is not None:
            self.discoverer.patterns_changed()

    def measure_lengths(self, who: str, keys: frozenset[str]) -> None:
        """Read these keys' XLEN with every ``age_every``-th poll (in its pipeline: no round
        trip of its own)."""
        if keys:
            self._lengths[who] = keys
        else:
            self._lengths.pop(who, None)

    # Key sets of the patterns: SCAN fills them pass by pass; discovery adds keys as they
    # appear and retention removes the ones it deletes, so neither waits for a SCAN pass.

    def patterns(self) -> list[str]:
        """The key patterns subscribed on this endpoint."""
        return sorted({str(s.pattern) for s, _ in self._subscriptions.values() if s.pattern})

    def knows(self, key: str) -> bool:
        return any(key in scan.found or key in scan.seen for scan in self._scans.values())

    def learn(self, pattern: str, key: str) -> None:
        """A key of ``pattern`` found by an event: it joins the key set now and stays until
        a SCAN pass that began after it existed does not see it (it was deleted)."""
        scan = self._scans.setdefault(pattern, ScanState.start(pattern))
        scan.learn(key)

    def forget(self, source: Source, key: str) -> None:
        """A key we deleted leaves the key set now."""
        scan = self._scans.get(str(source.pattern))
        if scan is not None:
            scan.forget(key)

    def discovered(self, path: str, count: int) -> None:
        self._metrics.discovered.labels(self.endpoint, path).inc(count)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"poller {self.endpoint}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)
        if self._waker is not None:
            await self._waker.stop()
        await self.discoverer.stop()
        self.stopped = True  # nobody waits for a poll that will never come
        self._publish()

    def _publish(self) -> None:
        published, self._published = self._published, asyncio.Event()
        published.set()

    async def next_result(self, after_seq: int, within: float) -> PollResult | None:
        """The first result newer than ``after_seq``, waiting up to ``within`` seconds;
        None on timeout or when the poller stops."""
        deadline = time.monotonic() + within
        while not self.stopped:
            if self._result is not None and self._result.seq > after_seq:
                return self._result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), remaining)
        return None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            self._wake.clear()
            if self._subscriptions:
                try:
                    await self.poll_once()
                except Exception:  # a poller must outlive any one bad poll
                    logger.exception("poll of %s failed", self.endpoint)
            delay = max(0.0, self.interval - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def poll_once(self) -> PollResult:
        seq = (self._result.seq if self._result else 0) + 1
        sources = {source for source, _ in self._subscriptions.values()}
        keys: dict[Source, tuple[str, ...]] = {}
        complete: dict[Source, bool] = {}
        observation: Observation | None = None
        for source in sources:
            if source.key is not None:
                keys[source], complete[source] = (source.key,), True
                continue
            scan = self._scans.setdefault(str(source.pattern), ScanState.start(str(source.pattern)))
            try:
                await self.gateway.scan_streams(scan, budget=self._scan_budget)
            except GatewayError as exc:
                observation = Observation(
                    taken_at=time.monotonic(),
                    wall_time=datetime.now(UTC),
                    problem=exc.problem,
                    message=exc.message,
                )
                break
            keys[source] = pattern_streams(scan.found | scan.seen)
            complete[source] = scan.complete_passes > 0
        for pattern in [p for p in self._scans if Source(pattern=p) not in sources]:
            del self._scans[pattern]
        if observation is None:
            every_key = {key for ks in keys.values() for key in ks}
            self._measured &= every_key
            ages_for = age_sample(every_key, seq, self._age_every)
            ages_for |= (every_key - self._measured) | (self._measure_next & every_key)
            observation = await self.gateway.observe(
                every_key,
                ages_for=ages_for,
                details_for={s.key for s in sources if s.key is not None},
                # Dead-letter streams grow slowly: their lengths every 5th poll (as ages).
                lengths_for=frozenset().union(*self._lengths.values())
                if seq % self._age_every == 1 or self._age_every == 1
                else frozenset(),
            )
            if observation.problem is None:
                self._measured |= ages_for
                self._oldest, self._measure_next = carry_oldest(observation.streams, self._oldest)
        self._record(observation)
        result = self._result = PollResult(seq, observation, keys, complete)
        self._publish()
        return result

    def _record(self, observation: Observation) -> None:
        endpoint = self.endpoint
        outcome = "ok" if observation.problem is None else str(observation.problem)
        self._metrics.polls.labels(endpoint, outcome).inc()
        if observation.problem is None:
            self._metrics.poll_duration.labels(endpoint).observe(observation.duration_s)
            self._metrics.roundtrip.labels(endpoint, "poll").observe(observation.duration_s)
            self._metrics.polled_groups.labels(endpoint).set(
                sum(len(s.groups) for s in observation.streams.values())
            )


class Waker:
    """Wakes groups at zero without waiting for a poll: one blocking XREAD (which consumes
    nothing) over the streams of every sleeping group on an endpoint, from each group's own
    last-delivered-id, so any entry it has not seen ends the wait - even one added before
    the read began. Then the endpoint is polled at once and the group's loop scales it up."""

    def __init__(self, poller: Poller, block_ms: int = 1000) -> None:
        self._poller = poller
        self._block_ms = block_ms
        self._watching: dict[str, tuple[tuple[str, ...], str]] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, who: str, keys: Sequence[str], group: str) -> None:
        if self._watching.get(who) != (tuple(keys), group):
            self._watching[who] = (tuple(keys), group)
            self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"waker {self._poller.endpoint}")

    def unwatch(self, who: str) -> None:
        if self._watching.pop(who, None) is not None:
            self._changed.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)

    async def _positions(self) -> dict[str, str]:
        """Per stream, the earliest last-delivered-id of the groups watching it."""
        by_group: dict[str, set[str]] = {}
        for watched, group in self._watching.values():
            by_group.setdefault(group, set()).update(watched)
        positions: dict[str, str] = {}
        for group, keys in by_group.items():
            found = await self._poller.gateway.group_positions(sorted(keys), group)
            for key, position in found.items():
                if key not in positions or parse_id(position) < parse_id(positions[key]):
                    positions[key] = position
        return positions

    async def _run(self) -> None:
        gateway = self._poller.gateway
        positions: dict[str, str] = {}
        while True:
            if not self._watching:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                if self._changed.is_set():
                    self._changed.clear()
                    positions = await self._positions()
                read = asyncio.ensure_future(gateway.wait_for_entries(positions, self._block_ms))
                changed = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait({read, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                if not read.done():  # who is asleep changed: read again with the new set
                    await cancelled(read)
                    continue
                moved = read.result()
            except GatewayError as exc:  # Redis trouble: the regular polls report it
                logger.debug("waker on %s: %s", self._poller.endpoint, exc.message)
                await asyncio.sleep(1)
                continue
            if moved:
                positions.update(moved)
                self._poller.poll_now()


class Endpoints:
    """Gateways and their pollers, shared by every resource on an endpoint."""

    def __init__(
        self,
        metrics: Metrics,
        poller_options: dict[str, Any] | None = None,
        **gateway_options: object,
    ) -> None:
        self._metrics = metrics
        self._poller_options = poller_options or {}
        self._pool = GatewayPool(**gateway_options)
        self._pollers: dict[int, Poller] = {}

    async def acquire(self, user: str, endpoint: Endpoint) -> Poller:
        gateway = await self._pool.acquire(user, endpoint)
        await self._drop_unused()
        poller = self._pollers.get(id(gateway))
        if poller is None:
            poller = self._pollers[id(gateway)] = Poller(
                gateway, self._metrics, **self._poller_options
            )
            poller.start()
        return poller

    async def release(self, user: str) -> None:
        await self._pool.release(user)
        await self._drop_unused()

    async def _drop_unused(self) -> None:
        live = {id(g) for g in self._pool.gateways()}
        for key in [k for k in self._pollers if k not in live]:
            await self._pollers.pop(key).stop()

    def pollers(self) -> list[Poller]:
        return list(self._pollers.values())

    async def close(self) -> None:
        for poller in self._pollers.values():
            await poller.stop()
        self._pollers.clear()
        await self._pool.close()
