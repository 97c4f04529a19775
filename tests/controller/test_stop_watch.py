"""``stop_watched``: a loop in a long wait hears kopf stopping its daemon, from one task that
watches every loop's stop flag (not a task or two per loop)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from streamherd.controller import waiting
from streamherd.tasks import Signal


class Flag:
    """What kopf's DaemonStopped is to the loops: a bool (``wait`` is never used here)."""

    def __init__(self) -> None:
        self.stopped = False

    def __bool__(self) -> bool:
        return self.stopped

    def wait(self, timeout: float | None = None) -> Any:
        raise AssertionError("stop_watched must not wait on kopf's flag (a task per wait)")


async def until(check: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


def test_a_loop_waiting_for_a_minute_hears_its_stop_and_the_others_do_not() -> None:
    async def scenario() -> None:
        flags = [Flag() for _ in range(200)]
        woken: list[int] = []

        async def loop(number: int, flag: Flag) -> None:
            wake = Signal()
            async with waiting.stop_watched(flag, wake):
                while not flag:
                    await waiting.sleep(flag, wake, 60)
                woken.append(number)

        tasks_before = len(asyncio.all_tasks())
        loops = [asyncio.create_task(loop(i, flag)) for i, flag in enumerate(flags)]
        await asyncio.sleep(0)
        # 200 loops, 1 stop watch: no task per loop beyond the loop itself.
        assert len(asyncio.all_tasks()) == tasks_before + len(loops) + 1

        started = time.monotonic()
        flags[7].stopped = True
        await until(lambda: woken, 10 * waiting.STOP_CHECK_EVERY)
        assert woken == [7]
        assert time.monotonic() - started < 10 * waiting.STOP_CHECK_EVERY

        for flag in flags:
            flag.stopped = True
        await asyncio.wait_for(asyncio.gather(*loops), timeout=10 * waiting.STOP_CHECK_EVERY)
        assert sorted(woken) == list(range(200))

        # Nothing watched: the stop watch's task ends (nothing left running for ever).
        await until(lambda: len(asyncio.all_tasks()) == tasks_before, 10 * waiting.STOP_CHECK_EVERY)

    asyncio.run(scenario())


def test_a_loop_that_ends_on_its_own_is_no_longer_watched() -> None:
    async def scenario() -> None:
        flag = Flag()
        wake = Signal()
        async with waiting.stop_watched(flag, wake):
            pass
        flag.stopped = True
        await asyncio.sleep(3 * waiting.STOP_CHECK_EVERY)
        assert not wake.is_set()  # its signal is not set for a loop that has gone

    asyncio.run(scenario())


def test_loops_of_one_daemon_share_its_flag_and_all_hear_the_stop() -> None:
    """A ConsumerGroup's group loop and janitor loop watch their daemon's one flag."""

    async def scenario() -> None:
        flag, other = Flag(), Flag()
        wakes = [Signal(), Signal()]
        async with contextlib.AsyncExitStack() as stack:
            for wake in wakes:
                await stack.enter_async_context(waiting.stop_watched(flag, wake))
            bystander = await stack.enter_async_context(waiting.stop_watched(other, Signal()))
            flag.stopped = True
            await until(lambda: all(w.is_set() for w in wakes), 10 * waiting.STOP_CHECK_EVERY)
            assert not bystander.is_set()

    asyncio.run(scenario())
