"""Other writers of the objects the operator writes: a status it wrote overwritten by
someone else is written again (never lost: the operator does not trust its memory of what
it wrote over what the object says), and a kubectl-like writer racing its scaling (read,
change replicas, PUT with the resourceVersion: 409 when the operator wrote in between) does
not make it loop: it scales back on its next polls, one /scale PATCH a poll at most."""

from __future__ import annotations

import time

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import KINDS, Harness

pytestmark = pytest.mark.control_plane

SCALING = {"minReplicas": 2, "maxReplicas": 2, "pollInterval": "500ms"}


def replicas(h: Harness, name: str = "workers") -> int:
    return int((h.get("Deployment", name) or {}).get("spec", {}).get("replicas", -1))


def test_a_status_overwritten_by_another_writer_is_written_again(harness: Harness) -> None:
    h = harness
    h.consumer_deployment("workers", 1, "workers")
    h.stream("orders")
    h.group("workers", consumers={"deploymentRef": {"name": "workers"}}, autoscaling=SCALING)
    h.start()
    h.wait_status("ConsumerGroup", "workers", lambda s: s.get("replicas") == 2)
    scaling = h.condition("ConsumerGroup", "workers", "ScalingActive")
    assert scaling.get("reason") == "Scaling", scaling
    # A stale writer (an old operator instance, a script): its replicas and condition.
    stale = {**scaling, "status": "False", "reason": "ApiUnavailable", "message": "stale"}
    h.api.patch(
        KINDS["ConsumerGroup"],
        h.namespace,
        "workers",
        {"status": {"replicas": 7, "desiredReplicas": 9, "conditions": [stale]}},
        subresource="status",
    )
    assert h.status("ConsumerGroup", "workers")["replicas"] == 7
    status = h.wait_status(
        "ConsumerGroup",
        "workers",
        lambda s: (
            s.get("replicas") == 2
            and s.get("desiredReplicas") == 2
            and any(
                c["type"] == "ScalingActive" and c["reason"] == "Scaling"
                for c in s.get("conditions", [])
            )
        ),
        timeout=15,
    )
    assert status["replicas"] == replicas(h) == 2


def conflict(exc: Exception) -> bool:
    """A 409 from either tier's client (kubernetes' ApiException, the emulator's ApiError)."""
    return 409 in (getattr(exc, "status", None), getattr(exc, "code", None))


def test_a_kubectl_like_writer_racing_the_scaling_never_makes_it_loop(harness: Harness) -> None:
    h = harness
    h.consumer_deployment("workers", 1, "workers")
    h.stream("orders")
    h.group("workers", consumers={"deploymentRef": {"name": "workers"}}, autoscaling=SCALING)
    h.start()
    h.wait_status("ConsumerGroup", "workers", lambda s: s.get("replicas") == 2)
    scale = {"resource": "deployments/scale"}
    sent_before = h.metric("streamherd_api_requests_total", **scale)
    # Someone edits replicas as kubectl edit does: read, think, write back with the
    # resourceVersion read (409 when the operator scaled in between).
    window, wrote, conflicts = 6.0, 0, 0
    started = time.monotonic()
    while time.monotonic() - started < window:
        seen = h.get("Deployment", "workers")
        assert seen is not None
        time.sleep(0.3)  # the editor is open: a race, not a sleep-and-hope wait
        try:
            h.patch(
                "Deployment",
                "workers",
                {
                    "metadata": {"resourceVersion": seen["metadata"]["resourceVersion"]},
                    "spec": {"replicas": 5},
                },
            )
            wrote += 1
        except Exception as exc:
            if not conflict(exc):
                raise
            conflicts += 1
    elapsed = time.monotonic() - started
    sent = h.metric("streamherd_api_requests_total", **scale) - sent_before
    assert wrote >= 1, "the other writer never got its replicas in: no race to show"
    # One /scale PATCH a poll at most (500 ms), however often it is overridden.
    assert sent <= elapsed / 0.5 + 2, f"{sent} scale PATCHes in {elapsed:.1f} s"
    assert sent >= 1, "the operator never scaled back"
    wait_until(lambda: replicas(h) == 2, 15, message="not scaled back after the race")
    h.wait_status("ConsumerGroup", "workers", lambda s: s.get("replicas") == 2)
    conflicted = [
        line
        for line in h.logs().splitlines()
        if line.count("] ") >= 2
        and ("409" in line.split("] ", 2)[2] or "Conflict" in line.split("] ", 2)[2])
    ]
    # The operator's own writes (merge patches of /scale and /status) never conflict.
    assert not conflicted, conflicted[:5]
    print(
        f"race: {wrote} writes and {conflicts} 409s of the other writer, {sent:.0f} scale PATCHes"
    )
