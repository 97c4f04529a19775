"""Stopping tasks and waking them (loops of the operator and of the consumer SDK)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

RECANCEL = 0.1
"""Seconds between cancellations of a task that has not stopped yet."""


async def cancelled(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel tasks and wait until every one has stopped.

    Cancelled again until done: on Python 3.11, ``asyncio.wait_for`` (redis-py sends every
    command through one) swallows a cancellation that arrives as its inner call completes,
    and redis-py swallows one that arrives while it checks a pooled connection
    (redis/redis-py#2028): then a blocking read would run to the end of its BLOCK, or its
    socket timeout, and a loop of commands would run on for ever.

    If the caller is cancelled meanwhile, it still waits for them (its own cancellation is
    raised once they have stopped): a task given up here would be left running with nothing
    to stop it, and ``asyncio.run`` ends by cancelling leftover tasks once and waiting for
    them, for ever if one swallows that cancellation."""
    pending = {task for task in tasks if task is not None and not task.done()}
    interrupted = False
    while pending:
        for task in pending:
            task.cancel()
        try:
            await asyncio.wait(pending, timeout=RECANCEL)
        except asyncio.CancelledError:
            interrupted = True
        pending = {task for task in pending if not task.done()}
    for stopped in tasks:
        if stopped is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                stopped.result()
    if interrupted:
        raise asyncio.CancelledError


class Signal:
    """A flag loops wait on, several at once and with a timeout, at the cost of one future
    and one timer per wait. ``asyncio.Event.wait`` is a coroutine: waiting on two of them (an
    edit of the object, a poll result) with a timeout took a task each plus ``wait_for``'s,
    and with thousands of loops each woken every 2 s creating and cancelling those tasks was
    most of the operator's CPU (bench-load).

    ``set`` holds until ``clear`` (as an Event); ``pulse`` releases the current waiters and
    holds nothing (a publication: who waits after it waits for the next one)."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: set[asyncio.Future[None]] = set()

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        self.pulse()

    def clear(self) -> None:
        self._flag = False

    def attach(self, waiter: asyncio.Future[None]) -> None:
        """Resolve ``waiter`` at the next set or pulse (``wait_any``'s part)."""
        self._waiters.add(waiter)

    def detach(self, waiter: asyncio.Future[None]) -> None:
        self._waiters.discard(waiter)

    def pulse(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, seconds: float | None = None) -> bool:
        """Until set or pulsed (or for ``seconds``); True if set."""
        return await wait_any((self,), seconds)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def wait_any(signals: Iterable[Signal], seconds: float | None) -> bool:
    """Wait until one of ``signals`` is set or pulsed, or ``seconds`` have passed
    (None: no limit); True if one of them is set now. No task: one future the signals
    resolve, and a timer that resolves it too."""
    signals = tuple(signals)
    if any(signal.is_set() for signal in signals):
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    for signal in signals:
        signal.attach(waiter)
    timer = loop.call_later(seconds, _expire, waiter) if seconds is not None else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        for signal in signals:
            signal.detach(waiter)
    return any(signal.is_set() for signal in signals)
