"""How the loops wait: for the next poll, a timeout, an edit of their object, or kopf telling
them to stop, whichever comes first. A loop blocked on one of them alone would hold up
deletions until kopf's cancellation timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, Protocol

from streamherd.controller.polling import Poller, PollResult


class Stopped(Protocol):
    """kopf.DaemonStopped, or anything like it (tests)."""

    def __bool__(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


async def _first(
    main: Awaitable[Any] | None, stopped: Stopped, wake: asyncio.Event, seconds: float
) -> Any:
    tasks = [asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())]
    if main is not None:
        tasks.insert(0, asyncio.ensure_future(main))
    try:
        done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if main is not None and tasks[0] in done and not tasks[0].cancelled():
        return tasks[0].result()
    return None


async def sleep(stopped: Stopped, wake: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if the object changed or the daemon is stopping."""
    if seconds > 0 and not stopped:
        await _first(None, stopped, wake, seconds)


async def next_result(
    poller: Poller,
    after_seq: int,
    within: float,
    stopped: Stopped,
    wake: asyncio.Event,
    who: str | None = None,
) -> PollResult | None:
    """The next poll result (taken for ``who``, given one), or None if the wait was cut
    short."""
    if stopped:
        return None
    result: PollResult | None = await _first(
        poller.next_result(after_seq, within, who), stopped, wake, within
    )
    return result
