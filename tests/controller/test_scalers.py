"""ScalerIndex: whether another autoscaler (HPA, KEDA) drives a Deployment. Its periodic
re-list must never sit on the path from a wake-up to the scale write: it was the slow first
(and every 15th-second) wake of `make bench-reaction` (two LISTs before the decision)."""

from __future__ import annotations

import asyncio
from typing import Any

from e2e.cluster.processes import async_wait_until

from streamherd.controller.consumers import ScalerIndex
from streamherd.kube import KubeError
from streamherd.kube import requests as rq


class HeldLists:
    """A KubeClient's list_if_served that, once ``hold`` is set, waits until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.hpas: list[dict[str, Any]] = []
        self.hold = False
        self.released = asyncio.Event()

    async def list_if_served(self, resource: rq.Resource, namespace: str) -> list[dict[str, Any]]:
        self.calls += 1
        if self.hold:
            await self.released.wait()
        return list(self.hpas) if resource == rq.HPAS else []


def hpa_on(deployment: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "cpu"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": deployment}},
    }


async def test_a_stale_answer_is_given_at_once_and_refreshed_in_the_background() -> None:
    kube = HeldLists()
    scalers = ScalerIndex(kube, ttl=0.0)  # type: ignore[arg-type]
    assert await scalers.conflict("ns", "workers") is None  # nothing known yet: listed first
    assert kube.calls == 2
    kube.hpas, kube.hold = [hpa_on("workers")], True

    # The lists now hang until released: the answers come anyway (the last one known).
    assert await asyncio.wait_for(scalers.conflict("ns", "workers"), 5) is None
    assert await asyncio.wait_for(scalers.conflict("ns", "workers"), 5) is None
    assert kube.calls == 3, "one refresh at a time (the second list waits behind the first)"

    kube.released.set()

    found = await async_wait_until(lambda: scalers.conflict("ns", "workers"), 5)
    assert "HorizontalPodAutoscaler 'cpu'" in found
    await scalers.close()


async def test_nothing_known_is_never_taken_for_no_other_autoscaler() -> None:
    kube = HeldLists()
    kube.hpas = [hpa_on("workers")]
    scalers = ScalerIndex(kube, ttl=15.0)  # type: ignore[arg-type]
    assert "HorizontalPodAutoscaler 'cpu'" in str(await scalers.conflict("ns", "workers"))
    await scalers.close()


async def test_a_failed_background_refresh_makes_the_next_check_list_again_and_fail_closed() -> (
    None
):
    kube = HeldLists()
    scalers = ScalerIndex(kube, ttl=0.0)  # type: ignore[arg-type]
    assert await scalers.conflict("ns", "workers") is None
    failing = KubeError(403, "Forbidden", "cannot list horizontalpodautoscalers")

    async def refused(resource: rq.Resource, namespace: str) -> list[dict[str, Any]]:
        raise failing

    kube.list_if_served = refused  # type: ignore[method-assign]
    assert await scalers.conflict("ns", "workers") is None  # the last answer; refresh starts

    async def refused_now() -> bool:
        try:
            await scalers.conflict("ns", "workers")
        except KubeError:
            return True
        return False

    # Once the refresh failed, the check lists itself again, and fails (closed) with it.
    assert await async_wait_until(refused_now, 5)
    await scalers.close()
