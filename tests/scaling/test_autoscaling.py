"""Autoscaling through the local cluster, with real consumer processes run by the kubelet.

No test here asserts how fast something happens (timings are the benchmark's business);
they assert what happens, and use settings under which only the right mechanism can make
it happen in the time allowed (e.g. a 60 s poll interval for waking from zero)."""

from __future__ import annotations

from typing import Any

import pytest
from e2e.cluster.processes import wait_until
from tests.harness import Harness

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane


def replicas(h: Harness, name: str) -> int:
    return int(
        (h.api.get("deployments.apps", h.namespace, name) or {}).get("spec", {}).get("replicas", -1)
    )


def produce(h: Harness, count: int, **fields: str) -> None:
    pipe = h.r.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd("orders", {"msg": f"m{i}", **fields})
    pipe.execute()


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_burst_scales_up_drains_and_returns_to_zero(harness: Harness, kubelet: Any) -> None:
    h = harness
    h.consumer_deployment("workers", 0, "workers", WORK_MS="5")
    h.stream("orders")
    h.group(
        "workers",
        startId="$",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={
            "minReplicas": 0,
            "maxReplicas": 4,
            "targetPerReplica": 100,
            "pollInterval": "500ms",
            "scaleDown": {"stabilizationWindow": "2s"},
            "idleBeforeZero": "3s",
        },
    )
    h.start()
    h.wait_status(
        "ConsumerGroup",
        "workers",
        lambda s: s.get("replicas") == 0 and s.get("desiredReplicas") == 0,
    )

    produce(h, 1000)
    peak = wait_until(lambda: replicas(h, "workers") == 4 and 4, 30, message="never scaled to 4")
    assert peak == 4
    wait_until(
        lambda: h.r.scard("processed:workers") == 1000,
        60,
        message=lambda: f"processed {h.r.scard('processed:workers')}",
    )
    wait_until(lambda: replicas(h, "workers") == 0, 60, message="never came back to zero")
    status = h.wait_status(
        "ConsumerGroup",
        "workers",
        lambda s: s.get("desiredReplicas") == 0 and s.get("replicas") == 0,
    )
    assert status["lastScaleReason"].startswith("backlog 0 for 3s")
    h.wait_event("workers", "WokeUp")
    h.wait_event("workers", "ScaledToZero")
    assert h.groups_in_redis("orders")["workers"]["pending"] == 0, "nothing left unacknowledged"
    scaling = [c for c in status["conditions"] if c["type"] == "ScalingActive"]
    assert scaling and scaling[0]["status"] == "True"


def test_one_message_wakes_a_group_at_zero_without_waiting_for_a_poll(
    harness: Harness, kubelet: Any
) -> None:
    h = harness
    h.consumer_deployment("workers", 0, "workers", WORK_MS="5")
    h.stream("orders")
    h.group(
        "workers",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={
            "minReplicas": 0,
            "maxReplicas": 2,
            "pollInterval": "60s",
            "idleBeforeZero": "60s",
        },
    )
    h.start()
    h.wait_status("ConsumerGroup", "workers", lambda s: s.get("desiredReplicas") == 0)
    h.r.xadd("orders", {"msg": "hello"})
    # The next regular poll is up to 60 s away: only the blocking XREAD can wake it in time.
    wait_until(lambda: replicas(h, "workers") == 1, 15, message="not woken by the first message")
    wait_until(lambda: h.r.sismember("processed:workers", "hello"), 30)
    h.wait_event("workers", "WokeUp")


def test_an_hpa_on_the_deployment_is_a_conflict_and_nothing_is_scaled(
    harness: Harness, kubelet: Any
) -> None:
    h = harness
    h.consumer_deployment("workers", 1, "workers", WORK_MS="5")
    h.create(
        "HorizontalPodAutoscaler",
        "workers-cpu",
        {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "workers"},
            "minReplicas": 1,
            "maxReplicas": 5,
        },
    )
    h.stream("orders")
    h.group(
        "workers",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={"maxReplicas": 10, "targetPerReplica": 10},
    )
    produce(h, 500)
    h.start()
    ready = h.wait_ready("ConsumerGroup", "workers", "False", "ScalerConflict")
    assert "HorizontalPodAutoscaler 'workers-cpu'" in ready["message"]
    assert replicas(h, "workers") == 1
    assert not [e for e in h.events("workers") if e[1] in ("ScaledUp", "WokeUp")]


def test_missing_deployment_is_reported(harness: Harness) -> None:
    h = harness
    h.stream("orders")
    h.group("workers", consumers={"deploymentRef": {"name": "ghost"}}, autoscaling={})
    h.start()
    ready = h.wait_ready("ConsumerGroup", "workers", "False", "DeploymentNotFound")
    assert "'ghost'" in ready["message"]


def test_a_template_gets_an_owned_deployment_that_consumes(harness: Harness, kubelet: Any) -> None:
    h = harness
    h.stream("orders")
    template = {
        "metadata": {"labels": {"team": "crm"}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "enricher",
                    "image": "crm:1",
                    "command": ["python", "-m", "e2e.consumer"],
                    "env": [{"name": "WORK_MS", "value": "1"}],
                },
            ],
        },
    }
    h.group(
        "crm",
        consumers={"template": template},
        autoscaling={"minReplicas": 1, "maxReplicas": 2, "pollInterval": "500ms"},
    )
    h.start()
    deployment = wait_until(lambda: h.api.get("deployments.apps", h.namespace, "crm-consumers"), 20)
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ConsumerGroup", "crm", True)
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (
        env["STREAMHERD_STREAM"]["value"] == "orders" and env["STREAMHERD_GROUP"]["value"] == "crm"
    )
    assert env["STREAMHERD_CONSUMER"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["WORK_MS"]["value"] == "1", "the user's env is kept"
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "crm"

    produce(h, 20)
    wait_until(
        lambda: h.r.scard("processed:crm") == 20,
        30,
        message="the owned Deployment's pods did not consume",
    )
    pods = [p["metadata"]["name"] for p in h.api.list("pods", h.namespace)]
    consumers = {c["name"] for c in h.r.xinfo_consumers("orders", "crm")}
    assert consumers <= set(pods), "consumers are named after their pods"

    template["spec"]["containers"][0]["env"] = [{"name": "WORK_MS", "value": "2"}]
    h.patch("ConsumerGroup", "crm", {"spec": {"consumers": {"template": template}}})
    wait_until(
        lambda: (
            {
                e["name"]: e.get("value")
                for e in h.api.get("deployments.apps", h.namespace, "crm-consumers")["spec"][
                    "template"
                ]["spec"]["containers"][0]["env"]
            }.get("WORK_MS")
            == "2"
        ),
        20,
        message="template change not rolled out",
    )
    h.delete("ConsumerGroup", "crm")
    h.wait_gone("ConsumerGroup", "crm")
    wait_until(
        lambda: h.api.get("deployments.apps", h.namespace, "crm-consumers") is None,
        20,
        message="owned Deployment not garbage-collected",
    )


def test_scale_in_removes_the_pods_with_the_least_pending_work(
    harness: Harness, kubelet: Any
) -> None:
    h = harness
    h.stream("orders")
    h.r.xgroup_create("orders", "workers", "$", mkstream=True)
    h.consumer_deployment("workers", 3, "workers", WORK_MS="5", BATCH="10")
    wait_until(lambda: len(kubelet.processes(h.namespace)) == 3, 20)
    pods = sorted(kubelet.processes(h.namespace))
    for pod in pods:  # every consumer is up and blocked in XREADGROUP
        wait_until(lambda pod=pod: "consuming" in kubelet.logs(pod, h.namespace), 20)
    # Unfinished work on one consumer only: poison entries added in one transaction go to
    # the first blocked reader, which never acknowledges them.
    pipe = h.r.pipeline(transaction=True)
    for i in range(4):
        pipe.xadd("orders", {"msg": f"x{i}", "poison": "1"})
    pipe.execute()
    wait_until(lambda: sum(c["pending"] for c in h.r.xinfo_consumers("orders", "workers")) == 4, 20)
    pending = {c["name"]: c["pending"] for c in h.r.xinfo_consumers("orders", "workers")}
    busy = max(pending, key=lambda name: pending[name])
    assert pending[busy] == 4

    h.group(
        "workers",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetPerReplica": 1000,
            "scaleDown": {"stabilizationWindow": "0s"},
        },
    )
    h.start()
    wait_until(lambda: replicas(h, "workers") == 1, 30, message="did not scale in")
    wait_until(lambda: len(kubelet.processes(h.namespace)) == 1, 30)
    assert list(kubelet.processes(h.namespace)) == [busy], "the pod holding the pending work stays"
    costs = {
        p["metadata"]["name"]: p["metadata"]
        .get("annotations", {})
        .get("controller.kubernetes.io/pod-deletion-cost")
        for p in h.api.list("pods", h.namespace)
    }
    assert costs.get(busy) == "4"


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_a_burst_on_a_group_at_one_replica_scales_up_before_the_next_poll(
    harness: Harness, kubelet: Any
) -> None:
    """A group at one replica, idle, with a 60 s pollInterval: a burst raises its replicas
    long before the next poll. Only the burst probe can: the waker arms it on the first new
    entry, and its XLEN (every 0.5 s) sees the stream grow past what one replica absorbs."""
    h = harness
    h.consumer_deployment("workers", 1, "workers", WORK_MS="5")
    h.stream("orders")
    h.group(
        "workers",
        consumers={"deploymentRef": {"name": "workers"}},
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetPerReplica": 100,
            "pollInterval": "60s",
        },
    )
    h.start()
    h.wait_status("ConsumerGroup", "workers", lambda s: s.get("desiredReplicas") == 1)
    produce(h, 2000)
    # The next regular poll is up to 60 s away.
    wait_until(lambda: replicas(h, "workers") > 1, 10, message="the burst was not seen")
    wait_until(  # Events are queued: posted soon after the scale
        lambda: any(reason == "ScaledUp" for _, reason, _ in h.events("workers")),
        10,
        message=lambda: f"no ScaledUp Event: {h.events('workers')}",
    )
