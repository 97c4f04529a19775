"""Stopping tasks (loops of the operator and of the consumer SDK)."""

from __future__ import annotations

import asyncio
import contextlib
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
