"""Writes the loops hand off instead of awaiting: one slot per object, coalesced, drained by a
few senders in order of priority, then of how long each slot has been pending.

A loop that awaited its own status write waited behind every other object's writes in the
write budget: when 500 groups changed at once (start-up, a burst), a group's next poll, and
so its scale action, came after hundreds of writes. With the queue, ``put`` returns at once;
what an object's slot sends is computed when a sender gets to it (``flush``), so the latest
desired status replaces one that was not sent yet, and an object has at most one write
pending and at most one in flight (never two writes of one object racing each other).

What keeps its state consistent:

- *Oldest pending first, within a priority*: a slot keeps the time it was first put while it
  waits (a newer put changes what it sends, not its place), so no object starves behind
  objects that change more often. A put of a higher priority moves the slot up.
- *A put while the slot is in flight* marks it pending again: it is sent after the current
  send ends (with what is desired then).
- *The object deleted while its write is queued*: its flush gets 404 and gives up (the
  owner's ``flush`` decides; nothing is retried for a gone object). A 409 or any other
  failure leaves the owner's record of what the API holds unchanged, so its next ``put``
  sends the difference again.
- *The leader stepping down* (kopf's clean-up closes the client): ``close`` cancels the
  senders and drops what is pending; the next leader writes every status from its own
  observations.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SENDERS = 32
"""Slots sent at once. The write bucket sets the rate (and, serving by priority, the order);
the senders only bound what is in flight, so they must cover rate x latency: with 4, a
loaded API server answering in 1.4 s held the operator to 3 writes/s (make bench-api). A
request retried for a while (429, 503) holds one sender, not all."""


@dataclass
class _Slot:
    flush: Callable[[], Awaitable[None]]
    priority: int
    since: float
    seq: int
    pending: bool = True
    in_flight: bool = False


class WriteQueue:
    def __init__(self, senders: int = SENDERS, clock: Callable[[], float] = time.monotonic) -> None:
        self._senders_wanted = senders
        self._clock = clock
        self._slots: dict[Hashable, _Slot] = {}
        self._heap: list[tuple[int, float, int, Hashable]] = []
        """(priority, since, seq, key) of pending slots; stale entries (a slot moved up, or
        sent) are skipped when popped: an entry is live while its seq is the slot's."""
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._senders: list[asyncio.Task[None]] = []
        self._closed = False
        self.sent = 0
        """Slots flushed (tests, benchmarks)."""

    def __len__(self) -> int:
        """Slots pending (not counting those in flight)."""
        return sum(1 for s in self._slots.values() if s.pending)

    def oldest(self) -> float:
        """Seconds the longest-pending slot has waited (0 when none): the queue's delay."""
        now = self._clock()
        for _ in range(3):  # read by the metrics thread while the loop changes the slots
            try:
                waits = [now - s.since for s in list(self._slots.values()) if s.pending]
            except RuntimeError:
                continue
            return max(waits, default=0.0)
        return 0.0

    def put(self, key: Hashable, priority: int, flush: Callable[[], Awaitable[None]]) -> None:
        """Ask for ``flush`` to be called for ``key`` (replacing a pending one's)."""
        if self._closed:
            return
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(flush, priority, self._clock(), next(self._seq))
            self._idle.clear()
        else:
            slot.flush = flush
            if slot.pending and priority >= slot.priority:
                return  # waiting already, at least as urgently: it sends what is latest
            if slot.pending:  # moved up, keeping its place in time
                slot.priority = priority
            else:  # in flight: pending again, its wait starting now
                slot.pending, slot.since, slot.priority = True, self._clock(), priority
            slot.seq = next(self._seq)
        if not slot.in_flight:
            heapq.heappush(self._heap, (slot.priority, slot.since, slot.seq, key))
        self._start()
        self._wakeup.set()

    def _start(self) -> None:
        while len(self._senders) < self._senders_wanted:
            self._senders.append(asyncio.get_running_loop().create_task(self._send()))

    def _next(self) -> tuple[Hashable, _Slot] | None:
        while self._heap:
            _, _, seq, key = heapq.heappop(self._heap)
            slot = self._slots.get(key)
            if slot is not None and slot.pending and not slot.in_flight and slot.seq == seq:
                return key, slot
        return None

    async def _send(self) -> None:
        while True:
            found = self._next()
            if found is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key, slot = found
            slot.pending, slot.in_flight = False, True
            try:
                await slot.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # an owner's bug must not stop every object's writes
                logger.exception("a queued write of %s failed", key)
            finally:
                slot.in_flight = False
                self.sent += 1
            if slot.pending:  # put again while in flight
                slot.seq = next(self._seq)
                heapq.heappush(self._heap, (slot.priority, slot.since, slot.seq, key))
                self._wakeup.set()
            elif self._slots.get(key) is slot:
                del self._slots[key]
                if not self._slots:
                    self._idle.set()

    async def drained(self) -> None:
        """Until nothing is pending or in flight (tests, benchmarks)."""
        await self._idle.wait()

    async def close(self) -> None:
        self._closed = True
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders.clear()
        self._slots.clear()
        self._heap.clear()
        self._idle.set()
