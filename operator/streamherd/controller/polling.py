"""One poller per Redis endpoint: the streams and groups due on it in one pipelined poll.

Resources subscribe with the stream they care about (a key or a pattern) and how often they
want it measured. Each subscription keeps its own schedule: a poll takes every subscription
that is due (or nearly: within a tenth of its interval, so neighbours share a round trip) and
serves only those, so one group at 100 ms makes its own stream polled ten times a second,
not every stream on the endpoint. The due times of one interval lie on one grid (multiples of
the interval from the poller's start), so subscriptions that joined at different moments
still share their polls: 200 groups on one endpoint at one interval cost one poll.
A subscriber's first result is always from a poll that began after it subscribed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamherd.api.consumergroup import Autoscaling
from streamherd.controller.discovery import Discoverer
from streamherd.decisions.bursts import PROBE_INTERVAL, Baseline, early_poll_due
from streamherd.decisions.sampling import (
    OldestMemory,
    age_sample,
    carry_first_unread,
    carry_oldest,
)
from streamherd.gateway import GatewayError, GatewayPool, RedisGateway, ScanState
from streamherd.gateway.deadletter import lengths as stream_lengths
from streamherd.gateway.endpoint import Endpoint
from streamherd.keys import is_auxiliary, parse_id
from streamherd.metrics import Metrics
from streamherd.observations import Observation
from streamherd.tasks import Signal, cancelled, wait_any

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
EARLY_FRACTION = 0.1
"""A subscription due within this fraction of its interval joins the poll being taken now
(at most 10 % faster than asked; one round trip instead of two)."""


@dataclass(frozen=True)
class Source:
    """What a RedisStream names: one key, or a glob over keys."""

    key: str | None = None
    pattern: str | None = None

    @property
    def text(self) -> str:
        return self.key if self.key is not None else str(self.pattern)


@dataclass
class Subscription:
    """One subscriber's source and schedule. In this process's memory only, and nothing else
    needs it: every loop subscribes again with each step (a changed source or interval takes
    effect at once), unsubscribes when it ends, and a restarted operator starts with none,
    its loops' first results coming from polls begun after they subscribed."""

    source: Source
    interval: float
    due_at: float = 0.0
    """When it is to be polled next (monotonic; 0: at once)."""
    since: int = 0
    """The seq of the last poll begun before it subscribed (to this source): none of its
    results are this subscriber's."""
    polls: int = 0
    exact: bool = False
    """Its next poll was asked for a time (poll_at): not taken a tenth of an interval early."""


@dataclass(frozen=True)
class PollResult:
    seq: int
    observation: Observation
    keys: dict[Source, tuple[str, ...]] = field(default_factory=dict)
    discovery_complete: dict[Source, bool] = field(default_factory=dict)
    served: frozenset[str] = frozenset()
    """The subscribers this poll was taken for (due when it began)."""

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
        min_interval: float = 0.0,
    ) -> None:
        self.gateway = gateway
        self._metrics = metrics
        self._age_every = age_every
        self._scan_budget = scan_budget
        self.min_interval = min_interval
        """The operator's floor under every pollInterval (--min-poll-interval)."""
        self._subscriptions: dict[str, Subscription] = {}
        self._started = 0
        """The seq of the last poll begun."""
        self._epoch = time.monotonic()
        self._latest_by_source: dict[Source, PollResult] = {}
        self._source_polls: dict[Source, int] = {}
        """Per source, the polls it was in (spreads its age measurements over them)."""
        self._lengths: dict[str, frozenset[str]] = {}
        """Per subscriber, other keys whose length each poll reads (dead-letter streams)."""
        self._scans: dict[str, ScanState] = {}
        self._result: PollResult | None = None
        self._oldest: OldestMemory = {}
        """The last measured oldest pending entry per (key, group), carried into the polls
        that do not measure it. Derived from Redis alone: a restart starts empty and the
        first poll of a key measures it, so nothing needs to survive a restart."""
        self._first_unread: dict[str, str] = {}
        """Per key, the observe script's hints ("L F ...": the first entry F found after
        last-delivered-id L), from earlier polls (``carry_first_unread``). Derived from Redis
        alone and checked by the script against Redis's state before use, so a restart, a
        re-list or another replica can only make it empty, not wrong (the one case Redis's
        state cannot show, a stream re-created at the same position, lasts until the key's
        next age turn: see poll_once). Updated for the keys each poll observed; pruned to
        the keys still polled whenever it holds more keys than those."""
        self._measured: set[str] = set()
        """Keys measured at least once (and still polled)."""
        self._measure_next: set[str] = set()
        """Keys with pending entries the last poll had no measurement for."""
        self._published = Signal()
        """Pulsed at every publication, for waiters of any result (``who`` None)."""
        self._published_for: dict[str, Signal] = {}
        """Per subscriber waiting for its result, pulsed only by a poll taken for it: a poll
        for one group at 100 ms wakes that group's loop, not the thousand others."""
        self._served: dict[str, PollResult] = {}
        """Per subscriber, the last poll taken for it (a later one, for others, published
        before its loop ran does not hide it)."""
        self._wake = Signal()
        self._task: asyncio.Task[None] | None = None
        self.stopped = False
        self._waker: Waker | None = None
        self._prober: Prober | None = None
        self.discoverer = Discoverer(self, registry=registry, notifications=notifications)

    @property
    def endpoint(self) -> str:
        return self.gateway.endpoint.display

    def interval_of(self, who: str) -> float:
        """How often ``who`` is polled (its own interval, at least the operator's floor)."""
        subscription = self._subscriptions.get(who)
        return subscription.interval if subscription is not None else DEFAULT_INTERVAL

    @property
    def latest(self) -> PollResult | None:
        """The last poll, whoever it was for (it may not include a given source)."""
        return self._result

    def latest_for(self, source: Source) -> PollResult | None:
        """The last poll that included ``source`` (polls serve only who is due)."""
        return self._latest_by_source.get(source)

    def poll_now(self, who: Iterable[str] | None = None) -> None:
        """Poll these subscribers (None: all) at once instead of at their next tick
        (something just happened)."""
        for name in self._subscriptions if who is None else who:
            subscription = self._subscriptions.get(name)
            if subscription is not None:
                subscription.due_at = 0.0
        self._wake.set()

    def pattern_subscribers(self) -> list[str]:
        return [w for w, s in self._subscriptions.items() if s.source.pattern is not None]

    def waker(self) -> Waker:
        if self._waker is None:
            self._waker = Waker(self)
        return self._waker

    def prober(self) -> Prober:
        if self._prober is None:
            self._prober = Prober(self)
        return self._prober

    def poll_at(self, who: str, when: float) -> None:
        """Poll for ``who`` by ``when`` (monotonic) if its schedule would be later: a decision
        due between two of its ticks (scale to zero once idleBeforeZero has passed) is not
        put off to the next one (a 60 s pollInterval would make a 2 s idleBeforeZero 60 s)."""
        subscription = self._subscriptions.get(who)
        if subscription is None:
            return
        if when < subscription.due_at:
            subscription.due_at, subscription.exact = when, True
            self._wake.set()  # the loop recomputes its sleep

    def subscribe(self, who: str, source: Source, interval: float = DEFAULT_INTERVAL) -> None:
        interval = max(interval, self.min_interval)
        previous = self._subscriptions.get(who)
        if previous is None or previous.source != source:
            # Something new to measure: polled now, not at the next tick, and only by a poll
            # that begins from now on (one already under way did not include it).
            self._subscriptions[who] = Subscription(source, interval, 0.0, self._started)
            self._wake.set()
            if source.pattern is not None:
                self.discoverer.patterns_changed()
            return
        if interval != previous.interval:
            previous.due_at = min(previous.due_at, self._next_due(time.monotonic(), interval))
            previous.interval = interval
            self._wake.set()  # the schedule changed: the loop recomputes its sleep

    def unsubscribe(self, who: str) -> None:
        previous = self._subscriptions.pop(who, None)
        self._lengths.pop(who, None)
        self._served.pop(who, None)
        published = self._published_for.pop(who, None)
        if published is not None:
            published.pulse()  # a waiter of it checks again (and waits out its own time)
        if previous is not None and previous.source.pattern is not None:
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
        return sorted(
            {str(s.source.pattern) for s in self._subscriptions.values() if s.source.pattern}
        )

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
        if self._prober is not None:
            await self._prober.stop()
        await self.discoverer.stop()
        self.stopped = True  # nobody waits for a poll that will never come
        self._publish()

    def _publish(self, served: Iterable[str] | None = None) -> None:
        """Release the waiters of this result: of any result, and of the subscribers it was
        taken for (None: every waiter, as when the poller stops)."""
        self._published.pulse()
        for who in self._published_for if served is None else served:
            if (published := self._published_for.get(who)) is not None:
                published.pulse()

    def _listener(self, who: str) -> Signal:
        """The signal a poll taken for ``who`` pulses."""
        signal = self._published_for.get(who)
        if signal is None:
            signal = self._published_for[who] = Signal()
        return signal

    def _result_for(self, after_seq: int, who: str | None) -> PollResult | None:
        if who is None:
            result = self._result
        else:
            subscription = self._subscriptions.get(who)
            result = self._served.get(who)
            if subscription is None or result is None or result.seq <= subscription.since:
                return None
        return result if result is not None and result.seq > after_seq else None

    async def next_result(
        self, after_seq: int, within: float, who: str | None = None, unless: Signal | None = None
    ) -> PollResult | None:
        """The first result newer than ``after_seq`` (and, given ``who``, taken for that
        subscriber: due when the poll began, which began after it subscribed), waiting up to
        ``within`` seconds; None on timeout, when the poller stops, or once ``unless`` is
        set. One future per wait, no task (streamherd.tasks.Signal)."""
        deadline = time.monotonic() + within
        while not self.stopped:
            result = self._result_for(after_seq, who)
            if result is not None:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (unless is not None and unless.is_set()):
                return None
            published = self._published if who is None else self._listener(who)
            await wait_any((published,) if unless is None else (published, unless), remaining)
        return None

    def _next_due(self, now: float, interval: float) -> float:
        """The first point of the interval's grid at least half an interval from now."""
        steps = math.ceil((now + interval / 2 - self._epoch) / interval)
        return self._epoch + steps * interval

    def due(self, now: float) -> set[str]:
        """The subscribers to poll now: due, or due within a tenth of their interval."""
        return {
            who
            for who, s in self._subscriptions.items()
            if s.due_at - now <= (0.0 if s.exact else EARLY_FRACTION * s.interval)
        }

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            due = self.due(time.monotonic())
            if due:
                try:
                    await self.poll_once(due)
                except Exception:  # a poller must outlive any one bad poll
                    logger.exception("poll of %s failed", self.endpoint)
            now = time.monotonic()
            delay = min(
                (s.due_at - now for s in self._subscriptions.values()), default=DEFAULT_INTERVAL
            )
            await self._wake.wait(max(0.0, delay))

    async def poll_once(self, due: Iterable[str] | None = None) -> PollResult:
        """One poll of the sources of ``due`` (None: every subscriber)."""
        started = time.monotonic()
        seq = self._started = max(self._started, self._result.seq if self._result else 0) + 1
        served = frozenset(self._subscriptions if due is None else due) & set(self._subscriptions)
        for who in served:
            subscription = self._subscriptions[who]
            subscription.due_at = self._next_due(started, subscription.interval)
            subscription.exact = False
            subscription.polls += 1
        subscribed = {s.source for s in self._subscriptions.values()}
        sources = {self._subscriptions[who].source for who in served}
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
        for pattern in [p for p in self._scans if Source(pattern=p) not in subscribed]:
            del self._scans[pattern]
        for source in [s for s in self._source_polls if s not in subscribed]:
            del self._source_polls[source]
        if observation is None:
            every_key = {key for ks in keys.values() for key in ks}
            self._measured &= self._known_keys()
            ages_for: set[str] = set()
            for source, its_keys in keys.items():
                turn = self._source_polls[source] = self._source_polls.get(source, 0) + 1
                ages_for |= age_sample(its_keys, turn, self._age_every)
            ages_for |= (every_key - self._measured) | (self._measure_next & every_key)
            # A key's age turn looks its first unread entries up afresh (no hints), which
            # bounds what a stream deleted and re-created between two polls, at the same
            # last-delivered-id, could get wrong to one turn of age_every polls.
            hints = {
                k: self._first_unread[k] for k in every_key - ages_for if k in self._first_unread
            }
            observation = await self.gateway.observe(
                every_key,
                ages_for=ages_for,
                first_unread_hints=hints,
                details_for={s.key for s in sources if s.key is not None},
                # Dead-letter streams grow slowly: their lengths every 5th poll of their
                # subscriber (as ages).
                lengths_for=frozenset().union(
                    *(
                        self._lengths[who]
                        for who in served
                        if who in self._lengths
                        and (
                            self._age_every == 1
                            or self._subscriptions[who].polls % self._age_every == 1
                        )
                    )
                ),
            )
            if observation.problem is None:
                self._measured |= ages_for
                carried, measure_next = carry_oldest(observation.streams, self._oldest)
                known = self._known_keys()
                # Keys this poll did not include keep what was last measured for them.
                carried.update(
                    (k, v)
                    for k, v in self._oldest.items()
                    if k[0] not in observation.streams and k[0] in known
                )
                self._oldest = carried
                # In place, for the keys observed: thousands of keys, polled a few at a time.
                carried_hints = carry_first_unread(observation.streams, hints)
                memory = self._first_unread
                for key in observation.streams:
                    if key in carried_hints:
                        memory[key] = carried_hints[key]
                    else:
                        memory.pop(key, None)
                if len(memory) > len(known):
                    for key in [k for k in memory if k not in known]:
                        del memory[key]
                self._measure_next = (self._measure_next - every_key) | measure_next
        self._record(observation)
        result = self._result = PollResult(seq, observation, keys, complete, served)
        for source in [s for s in self._latest_by_source if s not in subscribed]:
            del self._latest_by_source[source]
        for source in sources:
            self._latest_by_source[source] = result
        for who in served:
            if who in self._subscriptions:
                self._served[who] = result
        self._publish(served)
        return result

    def _known_keys(self) -> set[str]:
        """Every key some subscription names (for a pattern: its key set so far)."""
        known: set[str] = set()
        for subscription in self._subscriptions.values():
            source = subscription.source
            if source.key is not None:
                known.add(source.key)
                continue
            scan = self._scans.get(str(source.pattern))
            if scan is not None:
                known |= scan.found | scan.seen
        return known

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
        self._then: dict[str, Callable[[], None]] = {}
        """Who is to be told of its first new entry instead of polled (once: the watch ends)."""
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(
        self, who: str, keys: Sequence[str], group: str, then: Callable[[], None] | None = None
    ) -> None:
        """Wake ``who`` on the first entry its group has not seen: a poll now, or, given
        ``then``, that call (and the watch ends: what follows is the caller's business)."""
        if then is None:
            self._then.pop(who, None)
        else:
            self._then[who] = then
        if self._watching.get(who) != (tuple(keys), group):
            self._watching[who] = (tuple(keys), group)
            self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"waker {self._poller.endpoint}")

    def unwatch(self, who: str) -> None:
        self._then.pop(who, None)
        if self._watching.pop(who, None) is not None:
            self._changed.set()

    def watches(self, who: str) -> bool:
        return who in self._watching

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
                woken = [w for w, (keys, _) in self._watching.items() if set(keys) & set(moved)]
                for who in [w for w in woken if w in self._then]:
                    then = self._then.pop(who)
                    self.unwatch(who)  # else each later entry would end the read at once
                    then()
                asleep = [w for w in woken if w in self._watching]
                if asleep:
                    self._poller.poll_now(asleep)


@dataclass
class _Probed:
    keys: tuple[str, ...]
    policy: Autoscaling
    baseline: Baseline
    armed: bool


class Prober:
    """Follows the busy groups at one or more replicas between their polls: every
    ``PROBE_INTERVAL`` one pipelined XLEN of their streams, and an early poll for a group
    whose streams grew past what its replicas absorb (decisions/bursts.py says when). Idle
    groups are followed by the waker, which arms them on their first new entry.

    Consistency: each group's loop replaces its entry at every poll (``track``) and removes
    it when it stops following (``forget``); an early poll disarms the entry until that
    group's next poll re-tracks it, so one poll's numbers never ask for two early polls.
    In memory only: a restarted operator re-tracks from its first polls."""

    def __init__(self, poller: Poller, interval: float = PROBE_INTERVAL) -> None:
        self._poller = poller
        self._interval = interval
        self._probed: dict[str, _Probed] = {}
        self._armed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.probes = 0
        """Probe round trips taken (for tests and the benchmark's cost figure)."""

    def track(
        self,
        who: str,
        keys: Sequence[str],
        policy: Autoscaling,
        baseline: Baseline,
        *,
        armed: bool,
    ) -> None:
        self._probed[who] = _Probed(tuple(keys), policy, baseline, armed)
        if armed:
            self.arm(who)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"prober {self._poller.endpoint}")

    def arm(self, who: str) -> None:
        """Probe ``who`` from the next tick (the waker saw its first new entry)."""
        probed = self._probed.get(who)
        if probed is not None:
            probed.armed = True
            self._armed.set()

    def forget(self, who: str) -> None:
        self._probed.pop(who, None)

    def baseline_of(self, who: str) -> Baseline | None:
        probed = self._probed.get(who)
        return probed.baseline if probed is not None else None

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancelled(task)

    async def _run(self) -> None:
        while True:
            armed = {w: p for w, p in self._probed.items() if p.armed}
            if not armed:
                self._armed.clear()
                await self._armed.wait()
                continue
            await asyncio.sleep(self._interval)
            armed = {w: p for w, p in self._probed.items() if p.armed}
            keys = sorted({k for p in armed.values() for k in p.keys})
            if not keys:
                continue
            try:
                found = await stream_lengths(self._poller.gateway, keys)
            except GatewayError as exc:  # Redis trouble: the regular polls report it
                logger.debug("prober on %s: %s", self._poller.endpoint, exc.message)
                continue
            self.probes += 1
            now = time.monotonic()
            due = [
                who
                for who, p in armed.items()
                if early_poll_due(p.policy, p.baseline, _of(found, p.keys), now)
            ]
            for who in due:
                self._probed[who].armed = False
            if due:
                self._poller.poll_now(due)


def _of(found: Mapping[str, int | None], keys: Iterable[str]) -> dict[str, int | None]:
    return {key: found.get(key) for key in keys}


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
            # Forgotten only once stopped: a release cut short by a cancellation (kopf cancels
            # a daemon that has not exited within a few cycles of the operator's stop) leaves
            # the poller here, and close() stops the rest of it (its discoverer, its waker):
            # popped first, they ran on until kopf gave up on them, 5 s at every exit.
            await self._pollers[key].stop()
            self._pollers.pop(key, None)

    def pollers(self) -> list[Poller]:
        return list(self._pollers.values())

    async def close(self) -> None:
        for poller in self._pollers.values():
            await poller.stop()
        self._pollers.clear()
        await self._pool.close()
