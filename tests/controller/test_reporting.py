"""StatusWriter's queued writes: what reaches the API server is the difference between what
was written and what the loops decided, removals included."""

from __future__ import annotations

from typing import Any

from streamherd.controller.reporting import StatusWriter
from streamherd.kube import requests as rq
from streamherd.kube.queue import WriteQueue


class RecordingKube:
    """The two things a StatusWriter uses of the client: its queue and patch_status."""

    def __init__(self) -> None:
        self.queue = WriteQueue()
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, *_: Any, **__: Any) -> None:
        self.patches.append(dict(_[3]))  # (resource, namespace, name, status)


BODY = {
    "metadata": {"namespace": "ns", "name": "billing"},
    "status": {"janitorCronJob": "billing-janitor", "recovered": 3},
}


async def test_a_field_set_to_none_is_removed_from_the_status_not_forgotten() -> None:
    kube = RecordingKube()
    writer = StatusWriter(kube, rq.CONSUMER_GROUPS, BODY, numbers_every=0)  # type: ignore[arg-type]
    await writer.write({"janitorCronJob": None})
    await kube.queue.drained()
    assert kube.patches == [{"janitorCronJob": None}]
    assert writer.written == {"recovered": 3}, "another writer's field is left alone"
    await writer.write({"janitorCronJob": None})
    await kube.queue.drained()
    assert len(kube.patches) == 1, "removed once: nothing more to send"
    await kube.queue.close()


async def test_a_removal_and_a_change_queued_together_go_in_one_patch() -> None:
    kube = RecordingKube()
    writer = StatusWriter(kube, rq.CONSUMER_GROUPS, BODY, numbers_every=0)  # type: ignore[arg-type]
    await writer.write({"janitorCronJob": None})
    await writer.write({"observedGeneration": 2})
    await kube.queue.drained()
    assert kube.patches == [{"janitorCronJob": None, "observedGeneration": 2}]
    await kube.queue.close()
