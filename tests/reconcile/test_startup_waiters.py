"""kopf's start-up gate (streamherd.main.quiet_toggle_sets): every object's handlers wait for
kopf's indexes to be filled, on one ToggleSet with a toggle per object of an indexed kind.
Each toggle dropped woke every waiter; with the patch a waiter wakes when the set's state
changes, so N objects cost O(N) wake-ups, not O(N^2) (bench-load: minutes of CPU at the
start with 2,000 ConsumerGroups and 2,000 RedisStreams)."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles  # what kopf's start-up gate is made of

import streamherd.main  # noqa: F401 - applies the patch, as `streamherd run` does


async def wakeups(n: int) -> tuple[int, bool]:
    """(predicate checks, every waiter released) for n waiters and n toggles dropped one by
    one, as kopf's workers do while its indexes fill."""
    gate = aiotoggles.ToggleSet(all)
    toggles = [await gate.make_toggle(name=str(i)) for i in range(n)]
    checks = 0

    async def waiter() -> None:
        nonlocal checks
        async with gate._condition:  # counting what wait_for does

            def check() -> bool:
                nonlocal checks
                checks += 1
                return gate.is_on()

            await gate._condition.wait_for(check)

    waiters = [asyncio.create_task(waiter()) for _ in range(n)]
    await asyncio.sleep(0)
    for toggle in toggles:
        await gate.drop_toggle(toggle)
        await asyncio.sleep(0)
    done, _ = await asyncio.wait(waiters, timeout=10)
    return checks, len(done) == n


async def test_the_waiters_wake_when_the_gate_opens_not_at_every_toggle() -> None:
    checks, released = await wakeups(400)
    assert released
    assert checks <= 2 * 400, f"{checks} checks for 400 waiters: woken at every toggle"


async def test_a_gate_that_closes_and_opens_again_still_releases_its_waiters() -> None:
    gate = aiotoggles.ToggleSet(all)
    first = await gate.make_toggle(name="a")
    waiter = asyncio.create_task(gate.wait_for(True))
    await asyncio.sleep(0)
    second = await gate.make_toggle(True, name="b")  # on: the set stays off (a is off)
    await gate.drop_toggle(first)  # the set turns on
    await asyncio.wait_for(waiter, 5)
    closed = asyncio.create_task(gate.wait_for(False))
    await asyncio.sleep(0)
    await second.turn_to(False)  # a toggle's own change still wakes the set's waiters
    await asyncio.wait_for(closed, 5)
