"""The client-side rate limit of the operator's API requests, like client-go's QPS/burst token
bucket (``flowcontrol.NewTokenBucketRateLimiter``): writes and reads have buckets of their own,
so status, scale and Event writes together never exceed ``write_qps`` on average, with bursts
of up to ``write_burst``.

Writes that can wait (status numbers, an Event's repeat count) are *deferrable*: they take a
token only while more than ``reserve`` remain and are never queued, so they cannot delay what
must go at once (conditions, replicas, scale actions), which waits its turn (FIFO) instead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_WRITE_QPS = 15.0
DEFAULT_WRITE_BURST = 30
DEFAULT_READ_QPS = 50.0
DEFAULT_READ_BURST = 100


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()
        self._turn = asyncio.Lock()

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
        if self._turn.locked() or self._refill() < keep + 1:
            return False  # someone is waiting for a token: they go first
        self._tokens -= 1
        return True

    async def take(self) -> float:
        """Take a token, waiting (in turn) for one; returns the seconds waited."""
        started = self._clock()
        async with self._turn:
            missing = 1 - self._refill()
            if missing > 0:  # the time until the next token: nothing else can bring it sooner
                await asyncio.sleep(missing / self.rate)
                self._refill()
            self._tokens -= 1
        return self._clock() - started


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
