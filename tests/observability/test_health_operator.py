"""Group health through the real operator, with real consumers run by the simulated kubelet:
the Healthy condition, its Events and the metric, for each state a user meets."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import Harness

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane


def healthy(h: Harness, name: str) -> dict[str, Any]:
    for c in h.status("ConsumerGroup", name).get("conditions") or []:
        if c["type"] == "Healthy":
            return c  # type: ignore[no-any-return]
    return {}


def wait_health(h: Harness, name: str, reason: str, timeout: float = 30) -> dict[str, Any]:
    return wait_until(
        lambda: (c := healthy(h, name)).get("reason") == reason and c,
        timeout,
        interval=0.1,
        message=lambda: f"{name} never {reason}; last {healthy(h, name)}\n{h.logs()[-2000:]}",
    )


def health_metric(h: Harness, name: str) -> dict[str, float]:
    out = {}
    for line in h.metrics().splitlines():
        m = re.match(r"streamherd_group_health\{(.*)\} (\S+)$", line)
        if m and f'consumergroup="{name}"' in m.group(1):
            state = re.search(r'state="(\w+)"', m.group(1))
            assert state is not None
            out[state.group(1)] = float(m.group(2))
    return out


def group_spec(deployment: str, **extra: Any) -> dict[str, Any]:
    return {
        "startId": "0",
        "consumers": {"deploymentRef": {"name": deployment}},
        "autoscaling": {"enabled": False, "pollInterval": "200ms"},
        "recovery": {"enabled": False},
        "health": {"window": "2s"},
        **extra,
    }


@pytest.mark.e2e_variants("control-plane")
def test_stalled_on_poison_then_ok_again_with_events_and_metric(
    harness: Harness, kubelet: Any
) -> None:
    h = harness
    for i in range(5):
        h.r.xadd("orders", {"msg": f"bad{i}", "poison": "1"})
    h.consumer_deployment("workers", 1, "workers", WORK_MS="1")
    h.stream("orders")
    h.group("workers", **group_spec("workers"))
    h.start()
    # The consumer reads the five and never acknowledges them: nothing moves for the window.
    stalled = wait_health(h, "workers", "Stalled")
    assert stalled["status"] == "False"
    assert "nothing delivered or acknowledged for 2s while 1 consumer(s)" in stalled["message"]
    wait_until(lambda: health_metric(h, "workers").get("Stalled") == 1, 10)
    assert health_metric(h, "workers")["OK"] == 0
    # New work goes through: progress again, and the backlog falls back to the five.
    for i in range(20):
        h.r.xadd("orders", {"msg": f"good{i}"})
    ok = wait_health(h, "workers", "OK")
    assert ok["status"] == "True"
    wait_until(lambda: h.r.scard("processed:workers") == 20, 20)
    h.wait_event("workers", "Stalled", "Warning")
    h.wait_event("workers", "Healthy", "Normal")


@pytest.mark.e2e_variants("control-plane")
def test_stopped_without_a_ready_pod_and_lagging_under_a_flood(
    harness: Harness, kubelet: Any
) -> None:
    h = harness
    h.consumer_deployment("workers", 0, "workers", WORK_MS="20", BATCH="5")
    h.stream("orders")
    h.group("workers", **group_spec("workers"))
    h.r.xadd("orders", {"msg": "first"})
    h.start()
    stopped = wait_health(h, "workers", "Stopped")
    assert "no ready pods for 2s" in stopped["message"]
    h.wait_event("workers", "Stopped", "Warning")

    # One slow replica (~50 entries/s at best) against ~1,000 entries/s: the backlog grows at
    # every poll while the consumer makes progress.
    h.api.patch("deployments.apps", h.namespace, "workers", {"spec": {"replicas": 1}})
    wait_until(lambda: h.r.scard("processed:workers") >= 1, 30, message="no consumer came up")
    deadline = time.monotonic() + 60
    i = 0
    while healthy(h, "workers").get("reason") != "Lagging":
        assert time.monotonic() < deadline, f"never Lagging; last {healthy(h, 'workers')}"
        pipe = h.r.pipeline(transaction=False)
        for _ in range(100):
            pipe.xadd("orders", {"msg": f"m{i}"})
            i += 1
        pipe.execute()
        time.sleep(0.1)
    lagging = healthy(h, "workers")
    assert "never fell, while consumers made progress" in lagging["message"]
    h.wait_event("workers", "Lagging")
