"""How the loops wait: for the next poll, a timeout, an edit of their object, or kopf telling
them to stop, whichever comes first. A loop blocked on one of them alone would hold up
deletions until kopf's cancellation timeout.

Every wait is one future on ``Signal``s (streamherd.tasks), never a task: a loop's wake
signal is set by an edit of its object (Context.wake) and, once, by ``stop_watched`` when
kopf stops its daemon; the poller pulses a subscriber's own signal when a poll taken for it
is published."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol

from streamherd.controller.polling import Poller, PollResult
from streamherd.tasks import Signal


class Stopped(Protocol):
    """kopf.DaemonStopped, or anything like it (tests)."""

    def __bool__(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


STOP_CHECK_EVERY = 0.5
"""Seconds between two looks at the stop flags of the loops ``stop_watched`` watches: how
late a loop in a long wait hears that kopf stopped it (kopf cancels it after 10 s)."""


class _StopWatch:
    """Every watched loop of one event loop, and the one task that looks at their flags.

    A task per loop that awaited kopf's ``stopped.wait()`` cost two tasks per loop (kopf
    makes one of its own for each wait), their coroutines, futures and contexts: ~2.5 KiB a
    loop, three loops per RedisStream and ConsumerGroup pair (bench-load). A flag is a
    bool to read (kopf's ``DaemonStopped``), so one task reads them all: ~0.1 us a loop
    each ``STOP_CHECK_EVERY``. The task runs while anything is watched and ends after."""

    def __init__(self) -> None:
        self.watched: dict[object, tuple[Stopped, Signal]] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, key: object, stopped: Stopped, wake: Signal) -> None:
        self.watched[key] = (stopped, wake)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="stop watch")

    async def _run(self) -> None:
        while self.watched:
            await asyncio.sleep(STOP_CHECK_EVERY)
            fired = [key for key, (stopped, _) in self.watched.items() if stopped]
            for key in fired:
                _, wake = self.watched.pop(key)
                wake.set()


_stop_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _StopWatch] = (
    weakref.WeakKeyDictionary()
)
"""One ``_StopWatch`` per event loop (the operator has one; tests run many in turn)."""


@contextlib.asynccontextmanager
async def stop_watched(stopped: Stopped, wake: Signal) -> AsyncIterator[Signal]:
    """``wake``, set too when kopf stops the daemon (within ``STOP_CHECK_EVERY``), so a loop
    waiting on that signal alone also hears the stop."""
    loop = asyncio.get_running_loop()
    watch = _stop_watches.get(loop)
    if watch is None:
        watch = _stop_watches[loop] = _StopWatch()
    key = object()
    watch.add(key, stopped, wake)
    try:
        yield wake
    finally:
        watch.watched.pop(key, None)


async def sleep(stopped: Stopped, wake: Signal, seconds: float) -> None:
    """Wait ``seconds``, or less if the object changed or the daemon is stopping
    (``stop_watched`` sets ``wake``)."""
    if seconds > 0 and not stopped:
        await wake.wait(seconds)


async def next_result(
    poller: Poller,
    after_seq: int,
    within: float,
    stopped: Stopped,
    wake: Signal,
    who: str | None = None,
) -> PollResult | None:
    """The next poll result (taken for ``who``, given one), or None if the wait was cut
    short (``wake`` set: an edit, or the daemon stopping)."""
    if stopped:
        return None
    return await poller.next_result(after_seq, within, who, unless=wake)
