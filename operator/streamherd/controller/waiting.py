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
    makes one of its own for each wait), their coroutines, futures and contexts (three loops
    per RedisStream and ConsumerGroup pair: with a group's second parsed spec, 17.7 MiB of
    bench-load's full size, 395.6 MiB before and 377.9 after). A flag is a
    bool to read (kopf's ``DaemonStopped``, ~0.5 us), and the loops of one daemon share
    theirs, so one task reads each flag once per ``STOP_CHECK_EVERY``: ~2 ms a round for
    bench-load's 4,000 daemons. The task runs while anything is watched and ends after."""

    def __init__(self) -> None:
        self.flags: dict[int, tuple[Stopped, dict[object, Signal]]] = {}
        """id(flag) -> (the flag, the wake signal of each loop watching it, by its key)."""
        self.task: asyncio.Task[None] | None = None

    def add(self, key: object, stopped: Stopped, wake: Signal) -> None:
        self.flags.setdefault(id(stopped), (stopped, {}))[1][key] = wake
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="stop watch")

    def remove(self, key: object, stopped: Stopped) -> None:
        entry = self.flags.get(id(stopped))
        if entry is not None:
            entry[1].pop(key, None)
            if not entry[1]:
                del self.flags[id(stopped)]

    async def _run(self) -> None:
        while self.flags:
            await asyncio.sleep(STOP_CHECK_EVERY)
            fired = [flag for flag, (stopped, _) in self.flags.items() if stopped]
            for flag in fired:
                _, wakes = self.flags.pop(flag)
                for wake in wakes.values():
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
        watch.remove(key, stopped)


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
