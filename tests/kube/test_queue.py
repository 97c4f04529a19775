"""The write budget's order (kube.budget.TokenBucket by Priority) and the write queue
(kube.queue.WriteQueue): no I/O, a bucket of 100 writes a second, so each test takes about a
second."""

from __future__ import annotations

import asyncio
import time

from streamherd.kube import Priority
from streamherd.kube.budget import TokenBucket
from streamherd.kube.queue import WriteQueue


async def test_a_scale_action_takes_the_next_token_ahead_of_a_queue_of_status_writes() -> None:
    """The bucket was one FIFO: a scale action asked after 200 status writes waited for all of
    them (2 s here, 13 s at the default 15/s)."""
    bucket = TokenBucket(100.0, 1)
    await bucket.take()  # empty
    order: list[str] = []

    async def write(name: str, priority: Priority) -> None:
        await bucket.take(priority)
        order.append(name)

    status = [asyncio.create_task(write(f"s{i}", Priority.STATUS)) for i in range(200)]
    await asyncio.sleep(0.05)  # a few status writes are served meanwhile
    served_before = len(order)
    scale = asyncio.create_task(write("scale", Priority.SCALE))
    event = asyncio.create_task(write("event", Priority.EVENT))
    await asyncio.wait_for(scale, 1.0)
    assert order.index("scale") <= served_before + 1, order[: served_before + 3]
    await asyncio.gather(*status, event)
    assert order[-1] == "event", "an Event waits behind conditions"
    assert [n for n in order if n[1:].isdigit()] == [f"s{i}" for i in range(200)], "FIFO within"


async def test_a_cancelled_waiter_leaves_the_line_and_the_next_is_served() -> None:
    bucket = TokenBucket(20.0, 1)
    await bucket.take()
    first = asyncio.create_task(bucket.take(Priority.STATUS))
    second = asyncio.create_task(bucket.take(Priority.STATUS))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.wait_for(second, 1.0)
    assert bucket.waiting == 0
    assert not bucket.try_take(), "the token went to the second"


async def test_the_queue_coalesces_each_object_and_serves_the_longest_waiting_first() -> None:
    """300 objects each put ten times (a poll each): each is sent once, with its latest
    value, in the order they first asked; a condition change put last goes before them."""
    bucket = TokenBucket(100.0, 1)
    queue = WriteQueue(senders=4)
    latest: dict[str, int] = {}
    sent: list[tuple[str, int]] = []

    def flush_of(name: str, priority: Priority):  # type: ignore[no-untyped-def]
        async def flush() -> None:
            await bucket.take(priority)
            sent.append((name, latest[name]))

        return flush

    for version in range(10):
        for i in range(300):
            name = f"o{i:03}"
            latest[name] = version
            queue.put(name, Priority.NUMBERS, flush_of(name, Priority.NUMBERS))
        if version == 0:
            await asyncio.sleep(0)  # the senders start on the first objects
    latest["urgent"] = 0
    queue.put("urgent", Priority.STATUS, flush_of("urgent", Priority.STATUS))
    started = time.monotonic()
    await asyncio.wait_for(queue.drained(), 10.0)
    took = time.monotonic() - started
    names = [n for n, _ in sent]
    # At most twice: the few in flight or sent when the later puts came, once more for them.
    assert sorted(set(names)) == sorted(latest), "every object sent"
    twice = [n for n in latest if names.count(n) > 1]
    assert len(twice) <= 4 + 1, f"sent more than once: {twice}"
    assert max(names.count(n) for n in latest) <= 2, "not coalesced"
    assert names.index("urgent") <= 8, f"the condition waited behind numbers: {names[:12]}"
    last = {n: v for n, v in sent}
    assert all(last[n] == latest[n] for n in latest), "each object's last send is its latest"
    firsts = [n for n in dict.fromkeys(names) if n != "urgent"]
    assert firsts == sorted(firsts), "not the longest-waiting first"
    assert took < 300 / 100 * 1.5 + 1, f"{took:.1f}s for 301 writes at 100/s"
    await queue.close()


async def test_a_put_while_in_flight_is_sent_after_and_close_drops_what_is_pending() -> None:
    queue = WriteQueue(senders=2)
    release = asyncio.Event()
    calls: list[str] = []

    async def slow() -> None:
        calls.append("a")
        await release.wait()

    queue.put("a", Priority.STATUS, slow)
    await asyncio.sleep(0.01)
    assert calls == ["a"]
    queue.put("a", Priority.STATUS, slow)  # in flight: not a second concurrent send
    await asyncio.sleep(0.01)
    assert calls == ["a"], "two sends of one object at once"
    release.set()
    await asyncio.wait_for(queue.drained(), 1.0)
    assert calls == ["a", "a"]

    release.clear()
    queue.put("b", Priority.STATUS, slow)
    queue.put("c", Priority.NUMBERS, slow)
    queue.put("d", Priority.NUMBERS, slow)
    await asyncio.sleep(0.01)
    await queue.close()  # the leader steps down: nothing more is sent
    queue.put("e", Priority.STATUS, slow)
    await asyncio.sleep(0.01)
    assert calls == ["a", "a", "a", "a"], calls  # b and c were in flight (cancelled), d dropped
    assert len(queue) == 0
