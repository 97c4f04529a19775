"""The client-side rate limit of the operator's API requests, like client-go's QPS/burst token
bucket (``flowcontrol.NewTokenBucketRateLimiter``): writes and reads have buckets of their own,
so status, scale and Event writes together never exceed ``write_qps`` on average, with bursts
of up to ``write_burst``.

Writes wait for a token in order of :class:`Priority`, then of arrival: a scale action asks
after a queue of status writes and still gets the next token. An Event's repeat count is
*deferrable*: it takes a token only while more than ``reserve`` remain and nobody waits, and
is never queued. Status writes themselves do not wait in the loops at all: they go through
``kube.queue.WriteQueue`` (one coalescing slot per object)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

DEFAULT_WRITE_QPS = 15.0
DEFAULT_WRITE_BURST = 30
DEFAULT_READ_QPS = 50.0
DEFAULT_READ_BURST = 100


class Priority(IntEnum):
    """Who gets the next write token (lowest first)."""

    SCALE = 0
    """PATCH /scale and the apply of an owned Deployment: what the autoscaler decided."""
    STATUS = 1
    """A status write that changes conditions, observedGeneration or replicas."""
    EVENT = 2
    NUMBERS = 3
    """A status write of numbers only (backlog, lag): refreshed at the effective interval."""


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    wake: asyncio.Event = field(compare=False, default_factory=asyncio.Event)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full. Waiters are served
    by priority, then in arrival order.

    What keeps the waiting list consistent: only the head of the heap (the waiter served
    next) sleeps for a token, and it takes one only after checking, with no await in
    between, that it is still the head (a waiter of higher priority may have arrived while
    it slept: that one takes the token, the old head waits again). A waiter that leaves, by
    taking its token or by being cancelled, removes itself and wakes whoever is head then."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    @property
    def tokens(self) -> float:
        return self._refill()

    def try_take(self, keep: float = 0.0) -> bool:
        """Take a token if more than ``keep`` remain (never waits)."""
        if self._waiting or self._refill() < keep + 1:
            return False  # someone is waiting for a token: they go first
        self._tokens -= 1
        return True

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def take(self, priority: int = Priority.SCALE) -> float:
        """Take a token, waiting (by priority, then in turn) for one; the seconds waited."""
        started = self._clock()
        me = _Waiter(int(priority), next(self._seq))
        heapq.heappush(self._waiting, me)
        try:
            while True:
                if self._waiting[0] is not me:
                    me.wake.clear()
                    await me.wake.wait()
                    continue
                missing = 1 - self._refill()
                if missing <= 0:
                    self._tokens -= 1
                    return self._clock() - started
                # The time until the next token; a waiter ahead of us arriving meanwhile
                # takes it instead (checked above when we wake).
                await asyncio.sleep(missing / self.rate)
        finally:
            self._leave(me)

    def _leave(self, me: _Waiter) -> None:
        if self._waiting and self._waiting[0] is me:
            heapq.heappop(self._waiting)
        else:
            self._waiting.remove(me)
            heapq.heapify(self._waiting)
        if self._waiting:
            self._waiting[0].wake.set()


@dataclass
class Limits:
    """The operator's request budget (`streamherd run --api-write-qps ...`)."""

    write_qps: float = DEFAULT_WRITE_QPS
    write_burst: int = DEFAULT_WRITE_BURST
    read_qps: float = DEFAULT_READ_QPS
    read_burst: int = DEFAULT_READ_BURST

    def buckets(self) -> tuple[TokenBucket, TokenBucket]:
        return TokenBucket(self.write_qps, self.write_burst), TokenBucket(
            self.read_qps, self.read_burst
        )

    @property
    def reserve(self) -> float:
        """Tokens deferrable writes leave for the ones that cannot wait."""
        return self.write_burst / 4
