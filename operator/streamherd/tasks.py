"""Stopping tasks (loops of the operator and of the consumer SDK)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancelled(task: asyncio.Future[Any] | None) -> None:
    """Cancel a task and wait until it has stopped. Cancelled again until it is done: on
    Python 3.11, ``asyncio.wait_for`` (redis-py sends every command through one) swallows a
    cancellation that arrives as its inner call completes, and redis-py swallows one that
    arrives while it checks a pooled connection (redis/redis-py#2028): then a blocking read
    would run to the end of its BLOCK, or its socket timeout."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
