"""How the loops wait: for the next poll, a timeout, an edit of their object, or kopf telling
them to stop, whichever comes first. A loop blocked on one of them alone would hold up
deletions until kopf's cancellation timeout.

Every wait is one future on ``Signal``s (streamherd.tasks), never a task: a loop's wake
signal is set by an edit of its object (Context.wake) and, once, by ``stop_watched`` (the
one task per loop that waits for kopf's ``stopped``); the poller pulses a subscriber's own
signal when a poll taken for it is published."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol

from streamherd.controller.polling import Poller, PollResult
from streamherd.tasks import Signal, cancelled


class Stopped(Protocol):
    """kopf.DaemonStopped, or anything like it (tests)."""

    def __bool__(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


@contextlib.asynccontextmanager
async def stop_watched(stopped: Stopped, wake: Signal) -> AsyncIterator[Signal]:
    """``wake``, set when kopf stops the daemon too, so a loop waiting on that signal alone
    also hears the stop: one task for the loop's life (kopf's ``stopped.wait()`` is a
    coroutine that makes a task of its own each time: once, not at every wait)."""

    async def watch() -> None:
        await stopped.wait()
        wake.set()

    watcher = asyncio.create_task(watch(), name="stop watcher")
    try:
        yield wake
    finally:
        await cancelled(watcher)


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
