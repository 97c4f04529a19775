"""Stopping background tasks."""

from __future__ import annotations

import asyncio
import contextlib


async def cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait until it has stopped. Cancelled again until it is
    done: on Python 3.11, ``asyncio.wait_for`` (redis-py sends every command through one)
    swallows a cancellation that arrives as its inner call completes."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
