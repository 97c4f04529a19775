"""StatusWriter against another writer: it compares with the object as the watch shows it
once that is not older than its own writes (so an overwritten field is written again), and
keeps its memory while the watch lags its writes (no duplicate write of each)."""

from __future__ import annotations

import asyncio
from typing import Any

from streamherd.controller.reporting import StatusBudget, StatusWriter
from streamherd.kube import requests as rq
from streamherd.kube.queue import WriteQueue


class Kube:
    """Records status patches; the API server's answer: the object at a new version."""

    def __init__(self) -> None:
        self.queue = WriteQueue()
        self.patches: list[dict[str, Any]] = []
        self.version = 10

    async def patch_status(
        self, resource: rq.Resource, namespace: str, name: str, status: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        self.patches.append(status)
        self.version += 1
        return {"metadata": {"resourceVersion": str(self.version)}}

    async def post_event(self, *args: Any, **kwargs: Any) -> None:
        return None


def body(version: int, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "g", "resourceVersion": str(version)},
        "status": status,
    }


async def test_a_lagging_watch_makes_no_duplicate_writes() -> None:
    kube = Kube()
    live = body(10)
    writer = StatusWriter(kube, rq.CONSUMER_GROUPS, live, immediate=("replicas",))  # type: ignore[arg-type]
    await writer.write({"replicas": 2})
    await kube.queue.drained()
    await writer.write({"replicas": 2})  # the watch still shows version 10
    await kube.queue.drained()
    live["metadata"]["resourceVersion"] = "11"  # now our write
    live["status"] = {"replicas": 2}
    await writer.write({"replicas": 2})
    await kube.queue.drained()
    assert kube.patches == [{"replicas": 2}]
    await kube.queue.close()


async def test_a_field_another_writer_overwrote_is_written_again() -> None:
    kube = Kube()
    live = body(10)
    writer = StatusWriter(kube, rq.CONSUMER_GROUPS, live, immediate=("replicas",))  # type: ignore[arg-type]
    await writer.write({"replicas": 2})
    await kube.queue.drained()
    live["metadata"]["resourceVersion"] = "12"  # someone else's write after ours (11)
    live["status"] = {"replicas": 7, "theirs": "kept"}
    await writer.write({"replicas": 2})
    await kube.queue.drained()
    assert kube.patches == [{"replicas": 2}, {"replicas": 2}]
    assert "theirs" not in kube.patches[-1], "fields we do not own are left alone"
    await kube.queue.close()


async def test_two_quick_writes_before_the_watch_catches_up_are_not_repeated() -> None:
    kube = Kube()
    live = body(10)
    writer = StatusWriter(kube, rq.CONSUMER_GROUPS, live, immediate=("replicas", "desired"))  # type: ignore[arg-type]
    await writer.write({"replicas": 2})  # -> 11
    await kube.queue.drained()
    await writer.write({"replicas": 2, "desired": 3})  # -> 12, the body still at 10
    await kube.queue.drained()
    live["metadata"]["resourceVersion"] = "11"  # the watch shows the first only
    live["status"] = {"replicas": 2}
    await writer.write({"replicas": 2, "desired": 3})
    await kube.queue.drained()
    assert kube.patches == [{"replicas": 2}, {"desired": 3}]
    await kube.queue.close()


async def test_two_writers_of_one_object_never_write_each_others_fields() -> None:
    """A group has several writers (its loop's, the CronJob record's, the janitor's), each
    starting from the status as it was: one catching up with the live object must not take
    the others' newer values as differences and write its stale copy of them back."""
    kube = Kube()
    live = body(10, lag=1)
    loop = StatusWriter(kube, rq.CONSUMER_GROUPS, live, numbers_every=0)  # type: ignore[arg-type]
    cron = StatusWriter(kube, rq.CONSUMER_GROUPS, live, immediate=("janitorCronJob",))  # type: ignore[arg-type]
    await loop.write({"lag": 7})
    await kube.queue.drained()
    live["metadata"]["resourceVersion"] = "11"  # the watch shows the loop's write
    live["status"] = {"lag": 7}
    await cron.write({"janitorCronJob": "g-janitor"})
    await kube.queue.drained()
    assert kube.patches == [{"lag": 7}, {"janitorCronJob": "g-janitor"}]
    await kube.queue.close()


async def test_a_field_set_to_none_is_removed_from_the_status_not_forgotten() -> None:
    kube = Kube()
    live = body(10, janitorCronJob="g-janitor", recovered=3)
    writer = StatusWriter(kube, rq.CONSUMER_GROUPS, live, numbers_every=0)  # type: ignore[arg-type]
    await writer.write({"janitorCronJob": None})
    await kube.queue.drained()
    assert kube.patches == [{"janitorCronJob": None}]
    assert writer.written == {"recovered": 3}, "another writer's field is left alone"
    await writer.write({"janitorCronJob": None})
    await kube.queue.drained()
    assert len(kube.patches) == 1, "removed once: nothing more to send"
    await kube.queue.close()


async def test_a_removal_and_a_change_queued_together_go_in_one_patch() -> None:
    kube = Kube()
    live = body(10, janitorCronJob="g-janitor")
    writer = StatusWriter(kube, rq.CONSUMER_GROUPS, live, numbers_every=0)  # type: ignore[arg-type]
    await writer.write({"janitorCronJob": None})
    await writer.write({"observedGeneration": 2})
    await kube.queue.drained()
    assert kube.patches == [{"janitorCronJob": None, "observedGeneration": 2}]
    await kube.queue.close()


async def test_the_heartbeat_is_not_taken_for_a_removed_field() -> None:
    """The heartbeat is in what was written but never in what the loop asks for: it must not
    look like a field to remove (that made a heartbeat write at every poll)."""
    kube = Kube()
    writer = StatusWriter(kube, rq.REDIS_STREAMS, body(10), heartbeat="lastPolled")  # type: ignore[arg-type]
    await writer.write({"observedGeneration": 1})
    await kube.queue.drained()
    await writer.write({"observedGeneration": 1})
    await kube.queue.drained()
    assert len(kube.patches) == 1 and set(kube.patches[0]) == {"observedGeneration", "lastPolled"}
    await kube.queue.close()


async def test_a_heartbeat_on_its_own_is_spaced_by_the_shared_budget() -> None:
    """Heartbeats alone (an idle stream's lastPolled, a janitor's lastJanitorRun) count in
    the budget like numbers: with 5 writers at 1 write/s, one every 5 s each, not at every
    ``heartbeat_every``."""
    budget = StatusBudget(per_second=1.0)
    others = [StatusWriter(Kube(), rq.CONSUMER_GROUPS, body(1), budget=budget) for _ in range(4)]  # type: ignore[arg-type]
    kube = Kube()
    writer = StatusWriter(
        kube,  # type: ignore[arg-type]
        rq.CONSUMER_GROUPS,
        body(10),
        heartbeat="lastJanitorRun",
        heartbeat_every=0.05,
        heartbeat_budget=budget,
    )
    assert budget.spacing() == 5.0 and others
    await writer.write({"recovered": 1})
    await kube.queue.drained()
    await asyncio.sleep(0.2)  # four heartbeat periods: still within the budget's 5 s
    await writer.write({"recovered": 1})
    await kube.queue.drained()
    assert len(kube.patches) == 1, kube.patches
    await kube.queue.close()
