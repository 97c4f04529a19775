"""``streamherd.tasks.cancelled``: a task whose cancellation is swallowed (as redis-py can, see
its docstring) is cancelled again until it stops, and nothing is left running behind a caller
that is cancelled while it waits. And ``Signal``/``wait_any``, the loops' waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from streamherd.tasks import Signal, cancelled, wait_any


class Swallower:
    """A loop that ignores its first ``swallow`` cancellations and carries on, as a loop of
    redis-py commands does when ``asyncio.wait_for`` (Python 3.11) returns a reply that came in
    with the cancellation."""

    def __init__(self, swallow: int) -> None:
        self.swallow = swallow
        self.swallowed = 0
        self.stop = False
        """Set by the clean-up: ends the loop even where the code under test failed (a loop
        left running would hang the event loop's shutdown, which cancels it once)."""
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        while not self.stop:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if self.swallowed >= self.swallow:
                    raise
                self.swallowed += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]


@pytest.fixture
async def swallower() -> AsyncIterator[Callable[[int], Swallower]]:
    made: list[Swallower] = []

    def make(swallow: int) -> Swallower:
        made.append(Swallower(swallow))
        return made[-1]

    yield make
    for loop in made:
        loop.stop = True
    await asyncio.wait([loop.task for loop in made], timeout=5)


async def test_a_loop_that_swallows_cancellations_is_cancelled_until_it_stops(
    swallower: Callable[[int], Swallower],
) -> None:
    loops = [swallower(n) for n in (0, 1, 3)]
    await asyncio.sleep(0.05)
    await asyncio.wait_for(cancelled(*(loop.task for loop in loops), None), 5)
    assert all(loop.task.cancelled() for loop in loops)
    assert [loop.swallowed for loop in loops] == [0, 1, 3]


async def test_a_caller_cancelled_while_it_waits_leaves_nothing_running(
    swallower: Callable[[int], Swallower],
) -> None:
    """The consumer's loop is cancelled while its waker stops its subscriptions (or asyncio.run
    ends while a loop stops its reader): the reader must not be left behind, still running."""
    loop = swallower(5)
    await asyncio.sleep(0.05)
    caller = asyncio.create_task(cancelled(loop.task))
    await asyncio.sleep(0.15)  # the reader swallowed the first cancellations
    assert not caller.done()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 5)
    assert loop.task.done(), "the caller gave up and left its reader running"
    assert loop.swallowed == 5


async def test_tasks_that_failed_or_finished_are_waited_for_quietly() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def returns() -> int:
        return 1

    done = [asyncio.create_task(fails()), asyncio.create_task(returns())]
    await asyncio.sleep(0)
    await cancelled(*done)
    assert done[1].result() == 1


async def test_a_wait_on_signals_ends_at_the_first_set_pulse_or_timeout_and_makes_no_task() -> None:
    """streamherd.tasks.wait_any: one future per wait (the loops' waits made three tasks
    each, thousands a second at bench-load's scale)."""
    edit, poll = Signal(), Signal()
    tasks_before = len(asyncio.all_tasks())
    started = time.monotonic()
    assert await wait_any((edit, poll), 0.05) is False  # the timeout
    assert time.monotonic() - started >= 0.05

    waiter = asyncio.ensure_future(wait_any((edit, poll), 30))
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == tasks_before + 1, "the wait made tasks of its own"
    poll.pulse()  # releases who waits now, holds nothing
    assert await asyncio.wait_for(waiter, 5) is False and not poll.is_set()

    edit.set()  # holds until cleared: a wait that starts later ends at once
    assert await asyncio.wait_for(wait_any((poll, edit), 30), 1) is True
    edit.clear()
    assert await wait_any((edit,), 0.01) is False

    cancelled_wait = asyncio.ensure_future(wait_any((edit, poll), 30))
    await asyncio.sleep(0)
    cancelled_wait.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled_wait
    edit.set()  # a cancelled waiter left nothing behind to resolve
    assert edit.is_set()
