"""The janitor in the operator (`streamherd run`) and as `streamherd janitor` (mode CronJob),
through the local cluster, with consumer processes run by the kubelet and a real Redis."""

from __future__ import annotations

import copy
import sys
import time
from typing import Any

import pytest
import redis
from e2e.cluster.processes import OperatorProcess, wait_until
from tests.harness import Harness

from streamherd.fields import DELIVERIES_FIELD, ORIGIN_ID_FIELD

# The operator end to end: on the emulator and on the real control plane.
pytestmark = pytest.mark.control_plane


def produce(h: Harness, key: str, count: int, start: int = 0, **fields: str) -> list[str]:
    pipe = h.r.pipeline(transaction=False)
    for i in range(start, start + count):
        pipe.xadd(key, {"msg": f"m{i}", **fields})
    return [str(entry_id) for entry_id in pipe.execute()]


def pending_by_consumer(h: Harness, key: str, group: str) -> dict[str, int]:
    try:
        summary = h.r.xpending(key, group)
    except redis.ResponseError:  # no group yet
        return {}
    return {c["name"]: int(c["pending"]) for c in summary.get("consumers") or []}


def consumer_names(h: Harness, key: str, group: str) -> set[str]:
    return {c["name"] for c in h.r.xinfo_consumers(key, group)}


def metric(h: Harness, name: str, **labels: str) -> float:
    """The sum of a metric's samples that carry ``labels``."""
    total = 0.0
    for line in h.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_a_killed_consumer_pod_is_recovered_at_once_and_its_name_removed(
    harness: Harness, kubelet: Any
) -> None:
    """SIGKILL in the middle of a batch, and the pod is gone (replaced under a new name): its
    entries go to the other consumers long before minIdle (60s), and its name goes away."""
    h = harness
    h.consumer_deployment("workers", 3, "fulfilment", WORK_MS="40", BATCH="10")
    produce(h, "orders", 300)
    h.stream("orders")
    h.group(
        "fulfilment",
        startId="0",
        consumers={"deploymentRef": {"name": "workers"}},
        recovery={"minIdle": "60s", "interval": "1s"},
    )
    h.start()

    def busy_pod() -> str | None:
        pending = pending_by_consumer(h, "orders", "fulfilment")
        running = kubelet.processes(h.namespace)
        return next((pod for pod, n in pending.items() if n >= 5 and pod in running), None)

    victim = wait_until(busy_pod, 20, message="no consumer pod ever held a batch")
    kubelet.kill(victim, h.namespace)  # SIGKILL mid-batch
    h.api.delete("pods", h.namespace, victim, gracePeriodSeconds=0)
    killed_at = time.monotonic()
    stranded = pending_by_consumer(h, "orders", "fulfilment").get(victim, 0)
    assert stranded > 0

    expected = {f"m{i}" for i in range(300)}
    wait_until(
        lambda: h.r.smembers("processed:fulfilment") == expected,
        30,
        interval=0.1,
        message=lambda: (
            f"processed {len(h.r.smembers('processed:fulfilment'))}/300\n{h.logs()[-3000:]}"
        ),
    )
    wait_until(
        lambda: victim not in consumer_names(h, "orders", "fulfilment"),
        10,
        message=lambda: f"{victim} still a consumer: {consumer_names(h, 'orders', 'fulfilment')}",
    )
    assert time.monotonic() - killed_at < 60, "recovered before its entries could go stale"
    assert not h.r.xpending("orders", "fulfilment")["pending"]
    status = h.wait_status(
        "ConsumerGroup", "fulfilment", lambda s: (s.get("consumersRemoved") or 0) >= 1
    )
    # The consumer acknowledges one entry at a time: one XACK it sent just before the SIGKILL
    # can reach Redis after ``stranded`` was read (seen once at load 15: 16 recovered of 17).
    assert status["recovered"] >= stranded - 1 and status["deadLettered"] == 0
    assert status["lastJanitorRun"]
    labels = {"consumergroup": "fulfilment", "group": "fulfilment"}
    assert (
        metric(h, "streamherd_janitor_recovered_total", strategy="requeue", **labels)
        >= stranded - 1
    )
    assert metric(h, "streamherd_janitor_consumers_removed_total", **labels) >= 1
    assert h.ready("ConsumerGroup", "fulfilment")["status"] == "True", "Ready is not ours"


@pytest.mark.e2e_variants("control-plane")
def test_poison_is_dead_lettered_on_every_stream_of_a_pattern_and_paused_means_hands_off(
    harness: Harness,
) -> None:
    """No Deployment: only stale entries (minIdle) are recovered. A pattern's streams are all
    looked after; a poison message ends in each stream's dead-letter stream, with an Event."""
    h = harness
    keys = ["events:eu", "events:us"]
    for key in keys:
        produce(h, key, 5)
    h.stream("events", key=None, keyPattern="events:*")
    h.group(
        "audit",
        stream="events",
        startId="0",
        recovery={"minIdle": "1s", "interval": "1s", "maxDeliveries": 2},
    )
    h.start()
    wait_until(
        lambda: all("audit" in h.groups_in_redis(k) for k in keys),
        20,
        message=lambda: f"{h.status('ConsumerGroup', 'audit')} {h.status('RedisStream', 'events')}",
    )
    poison = {}
    for key in keys:
        poison[key] = h.r.xadd(key, {"msg": "bad", "poison": "1"})
        h.r.xreadgroup("audit", "worker", {key: ">"})  # all 6; the 5 good ones are acked
        for entry_id, _ in h.r.xrange(key, count=5):
            h.r.xack(key, "audit", entry_id)

    def dead_lettered() -> bool:
        for key in keys:  # a worker that keeps failing it: reads the re-queued copy, no ack
            h.r.xreadgroup("audit", "worker", {key: ">"})
        return all(h.r.xlen(f"{key}:dlq") == 1 for key in keys)

    wait_until(
        dead_lettered, 15, interval=0.2, message=lambda: f"no dead-letters\n{h.logs()[-3000:]}"
    )
    for key in keys:
        ((_, record),) = h.r.xrange(f"{key}:dlq")
        assert record[ORIGIN_ID_FIELD] == poison[key] and record[DELIVERIES_FIELD] == "2"
        assert record["streamherd-consumer"] == "worker" and record["poison"] == "1"
        assert not h.r.xpending(key, "audit")["pending"]
    h.wait_status("ConsumerGroup", "audit", lambda s: s.get("deadLettered") == 2)

    def warnings() -> list[str]:
        return [e[2] for e in h.events("audit") if e[:2] == ("Warning", "DeadLettered")]

    # The Event is posted after the status write that carries the counter: wait for it.
    wait_until(
        lambda: all(any(f"{key}:dlq" in w for w in warnings()) for key in keys),
        10,
        message=lambda: f"DeadLettered Events for both streams: {warnings()}",
    )

    h.patch(
        "ConsumerGroup", "audit", {"metadata": {"annotations": {"streamherd.io/paused": "true"}}}
    )
    h.wait_ready("ConsumerGroup", "audit", "False", "Paused")
    h.r.xadd("events:eu", {"msg": "late"})
    h.r.xreadgroup("audit", "worker", {"events:eu": ">"})
    time.sleep(2.5)  # past minIdle and two intervals: a janitor that ignored the pause would act
    assert h.r.xpending("events:eu", "audit")["pending"] == 1, "paused: nothing recovered"

    h.patch("ConsumerGroup", "audit", {"metadata": {"annotations": {"streamherd.io/paused": None}}})
    wait_until(lambda: h.r.xpending("events:eu", "audit")["pending"] == 0, 10)
    assert h.r.xrevrange("events:eu", count=1)[0][1]["msg"] == "late", "re-queued after resume"


def test_cron_job_mode_keeps_a_cron_job_that_does_the_same_work(
    harness: Harness, run_as_operator: Any
) -> None:
    h = harness
    env = {
        "STREAMHERD_IMAGE": "registry.local/streamherd:test",
        "STREAMHERD_JANITOR_SERVICE_ACCOUNT": "janitor-sa",
    }
    produce(h, "orders", 20)
    h.stream("orders")
    group = h.group(
        "billing",
        startId="0",
        recovery={
            "mode": "CronJob",
            "schedule": "*/5 * * * *",
            "minIdle": "1s",
            "interval": "1s",
            "maxDeliveries": 3,
        },
    )
    h.start(env=env)
    h.wait_ready("ConsumerGroup", "billing")

    cron = wait_until(
        lambda: h.api.get("cronjobs.batch", h.namespace, "billing-janitor"),
        15,
        message=lambda: f"no CronJob\n{h.logs()[-3000:]}",
    )
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    ref = cron["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"]) == (
        "ConsumerGroup",
        "billing",
        group["metadata"]["uid"],
    )
    pod_spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    command = ["streamherd", "janitor", "--namespace", h.namespace, "--group", "billing"]
    assert container["command"] == command
    assert container["image"] == "registry.local/streamherd:test"
    assert pod_spec["serviceAccountName"] == "janitor-sa"

    # Work for the janitor: a crashed worker's batch, and a poison entry delivered 3 times.
    h.r.xreadgroup("billing", "gone-worker", {"orders": ">"}, count=20)
    h.r.xreadgroup("billing", "gone-worker", {"orders": "0"}, count=1)
    h.r.xreadgroup("billing", "gone-worker", {"orders": "0"}, count=1)
    time.sleep(2.5)  # past minIdle and two intervals: in mode CronJob the operator must not act
    assert h.r.xpending("orders", "billing")["pending"] == 20
    assert "recovered" not in h.status("ConsumerGroup", "billing")

    job: OperatorProcess = run_as_operator(command)
    wait_until(lambda: not job.running, 30, message=lambda: job.logs())
    assert job.returncode == 0, job.logs()
    assert "recovered 19 (re-queued 19, claimed 0), dead-lettered 1" in job.logs(), job.logs()
    assert not h.r.xpending("orders", "billing")["pending"]
    assert h.r.xlen("orders") == 39 and h.r.xlen("orders:dlq") == 1
    status = h.status("ConsumerGroup", "billing")
    assert (status["recovered"], status["deadLettered"]) == (19, 1)
    assert status["lastJanitorRun"]
    h.wait_event("billing", "DeadLettered", "Warning")
    # Recorded where every process sees it: what a switch to mode Operator deletes (a group
    # never in mode CronJob touches no CronJob: tests/security/test_rbac.py).
    assert status["janitorCronJob"] == "billing-janitor"

    # Back to mode Operator: the CronJob goes, the operator's own timer takes over.
    h.patch("ConsumerGroup", "billing", {"spec": {"recovery": {"mode": "Operator"}}})
    wait_until(lambda: h.api.get("cronjobs.batch", h.namespace, "billing-janitor") is None, 10)
    h.wait_status("ConsumerGroup", "billing", lambda s: "janitorCronJob" not in s, timeout=10)
    h.r.xreadgroup("billing", "gone-worker", {"orders": ">"}, count=5)  # 5 copies, 2nd try
    h.wait_status("ConsumerGroup", "billing", lambda s: s.get("recovered") == 24, timeout=15)
    assert h.status("ConsumerGroup", "billing")["deadLettered"] == 1


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_a_dead_letter_key_in_another_cluster_slot_is_a_condition(
    harness: Harness, redis_cluster: Any
) -> None:
    h = harness
    h.stream("orders", redis={"url": redis_cluster.url, "mode": "Cluster"})
    h.group("g", recovery={"deadLetter": {"stream": "failed-orders"}})
    h.start()

    def refused(status: dict[str, Any]) -> bool:
        return any(
            c["type"] == "DeadLettering" and c["reason"] == "CrossSlot"
            for c in status.get("conditions", [])
        )

    status = h.wait_status("ConsumerGroup", "g", refused)
    condition = next(c for c in status["conditions"] if c["type"] == "DeadLettering")
    assert condition["status"] == "False" and "'failed-orders'" in condition["message"]
    assert h.ready("ConsumerGroup", "g")["status"] == "True", "consuming still works"
    h.patch("ConsumerGroup", "g", {"spec": {"recovery": {"deadLetter": {"stream": None}}}})
    h.wait_status("ConsumerGroup", "g", lambda s: not refused(s))


@pytest.mark.e2e_variants("control-plane")
def test_a_dead_letter_key_of_another_type_holds_poison_with_a_condition_until_freed(
    harness: Harness,
) -> None:
    """A string where the dead-letter stream should be: the janitor writes nothing there,
    holds the poison entry (counted), and the group's DeadLettering condition, an Event and
    a metric say so; once the key is freed, the entry is dead-lettered once."""
    h = harness
    ids = produce(h, "orders", 3)
    h.r.set("orders:dlq", "somebody's value")
    h.stream("orders")
    h.group(
        "billing", startId="0", recovery={"minIdle": "1s", "interval": "1s", "maxDeliveries": 2}
    )
    h.start()
    h.wait_ready("ConsumerGroup", "billing")
    h.r.xreadgroup("billing", "gone-worker", {"orders": ">"})
    h.r.xreadgroup("billing", "gone-worker", {"orders": "0"}, count=1)  # the first: 2 deliveries

    def refused(status: dict[str, Any]) -> bool:
        return any(
            c["type"] == "DeadLettering" and c["reason"] == "WrongKeyType"
            for c in status.get("conditions", [])
        )

    status = h.wait_status("ConsumerGroup", "billing", refused, timeout=20)
    condition = next(c for c in status["conditions"] if c["type"] == "DeadLettering")
    assert condition["status"] == "False" and "'orders:dlq' is a string" in condition["message"]

    def pending() -> list[str]:
        return [p["message_id"] for p in h.r.xpending_range("orders", "billing", "-", "+", 10)]

    wait_until(lambda: pending() == [ids[0]], 15, message=lambda: f"pending: {pending()}")
    assert h.r.get("orders:dlq") == "somebody's value", "never written"
    origins = [f["streamherd-origin-id"] for _, f in h.r.xrange("orders", min=f"({ids[-1]}")]
    assert origins == ids[1:], "the two good ones re-queued once"
    labels = {"consumergroup": "billing", "group": "billing"}
    assert metric(h, "streamherd_janitor_dead_letter_blocked", **labels) == 1
    wait_until(
        lambda: any(e[:2] == ("Warning", "WrongKeyType") for e in h.events("billing")),
        10,
        message=lambda: f"no WrongKeyType Event: {h.events('billing')}",
    )

    h.r.delete("orders:dlq")
    h.wait_status("ConsumerGroup", "billing", lambda s: not refused(s), timeout=20)
    wait_until(lambda: h.r.exists("orders:dlq") and h.r.xlen("orders:dlq") == 1, 10)
    ((_, record),) = h.r.xrange("orders:dlq")
    assert record["streamherd-origin-id"] == ids[0] and record["streamherd-group"] == "billing"
    assert not h.r.xpending("orders", "billing")["pending"]


@pytest.mark.e2e_variants("control-plane")  # the emulator run stays in the suite
def test_requeue_on_a_stream_other_groups_read_is_a_condition_and_a_metric(
    harness: Harness,
) -> None:
    h = harness
    produce(h, "calls", 1)
    h.stream("calls")
    h.group("brain", stream="calls", startId="0")
    h.group("crm", stream="calls", startId="0", recovery={"strategy": "Claim"})
    h.start()

    def isolation(name: str) -> dict[str, Any] | None:
        conditions = h.status("ConsumerGroup", name).get("conditions", [])
        return next((c for c in conditions if c["type"] == "RecoveryIsolated"), None)

    wait_until(
        lambda: (isolation("brain") or {}).get("reason") == "SharedStream",
        20,
        message=lambda: f"{isolation('brain')}\n{h.logs()[-2000:]}",
    )
    brain = isolation("brain")
    assert brain is not None and brain["status"] == "False" and "'crm'" in brain["message"]
    crm = isolation("crm")
    assert crm is not None and (crm["status"], crm["reason"]) == ("True", "Reconciled")
    assert metric(h, "streamherd_janitor_shared_requeue", consumergroup="brain") == 1
    assert metric(h, "streamherd_janitor_shared_requeue", consumergroup="crm") == 0

    h.patch("ConsumerGroup", "brain", {"spec": {"recovery": {"strategy": "Claim"}}})
    wait_until(lambda: (isolation("brain") or {}).get("status") == "True", 20)
    wait_until(
        lambda: metric(h, "streamherd_janitor_shared_requeue", consumergroup="brain") == 0, 10
    )


def ref(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


@pytest.mark.e2e_variants("control-plane")
def test_dead_by_identity_through_the_operators_watches(harness: Harness, kubelet: Any) -> None:
    """Through kopf's indexes of pods and ReplicaSets: a Job's pod named like the Deployment's,
    a canary ReplicaSet's pod of another Deployment, and a pod relabelled out of its
    ReplicaSet hold entries; the first two are deleted, the third still runs. None is taken
    for dead (their entries wait for minIdle), while a deleted pod of the Deployment is
    recovered at once, and so, once deleted, is the relabelled one (it was seen as ours)."""
    h = harness
    sleeper = {
        "name": "c",
        "image": "x",
        "command": [sys.executable, "-c", "import time; time.sleep(600)"],
    }
    h.create(
        "Deployment",
        "brain",
        {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "brain"}},
            "template": {
                "metadata": {"labels": {"app": "brain"}},
                "spec": {"containers": [sleeper]},
            },
        },
    )
    # A Job's pod named like one of the Deployment's (owned by a real Job: the emulator's
    # garbage collector removes objects whose owner does not exist, as Kubernetes does).
    backfill = h.api.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "brain-backfill", "namespace": h.namespace},
            "spec": {"template": {"spec": {"containers": [sleeper], "restartPolicy": "Never"}}},
        }
    )
    h.api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "brain-backfill-x7k2p",
                "namespace": h.namespace,
                "ownerReferences": [ref(backfill)],
            },
            "spec": {"containers": [sleeper], "restartPolicy": "Never"},
        }
    )
    # A canary of another Deployment whose ReplicaSet is named like one of brain's: once the
    # kubelet's Deployment controller made brain-canary's ReplicaSet, ours replaces it (same
    # pod-template-hash, owned by brain-canary), as a progressive-delivery tool would.
    canary_deployment = h.create(
        "Deployment",
        "brain-canary",
        {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "brain-canary"}},
            "template": {
                "metadata": {"labels": {"app": "brain-canary"}},
                "spec": {"containers": [sleeper]},
            },
        },
    )
    (made,) = wait_until(
        lambda: h.api.list("replicasets.apps", h.namespace, label_selector="app=brain-canary"), 20
    )
    replacement = copy.deepcopy({k: made[k] for k in ("apiVersion", "kind", "spec")})
    labels = made["metadata"]["labels"]
    h.api.create(
        {
            **replacement,
            "metadata": {
                "name": "brain-6c9d8f7b5",
                "namespace": h.namespace,
                "labels": labels,
                "ownerReferences": [ref(canary_deployment)],
            },
        }
    )
    h.api.delete("replicasets.apps", h.namespace, made["metadata"]["name"])
    produce(h, "orders", 40)
    h.stream("orders")
    h.group(
        "brain",
        startId="0",
        consumers={"deploymentRef": {"name": "brain"}},
        recovery={"minIdle": "60s", "interval": "1s"},
    )
    h.start()

    def pods_of(replicaset_prefix: str, exclude: str = "") -> list[str]:
        return sorted(
            p["metadata"]["name"]
            for p in h.api.list("pods", h.namespace)
            if not p["metadata"].get("deletionTimestamp")
            and any(
                r["kind"] == "ReplicaSet"
                and r["name"].startswith(replicaset_prefix)
                and r["name"] != exclude
                for r in p["metadata"].get("ownerReferences") or ()
            )
        )

    def described() -> str:
        return str(
            [
                (p["metadata"]["name"], p["metadata"].get("ownerReferences"))
                for p in h.api.list("pods", h.namespace)
            ]
            + [
                (r["metadata"]["name"], r["metadata"].get("labels"))
                for r in h.api.list("replicasets.apps", h.namespace)
            ]
        )

    ours = wait_until(
        lambda: len(pods_of("brain-", "brain-6c9d8f7b5")) == 2, 20, message=described
    ) and pods_of("brain-", "brain-6c9d8f7b5")
    canary = wait_until(lambda: pods_of("brain-6c9d8f7b5"), 20)[0]
    killed, relabelled = ours
    job = "brain-backfill-x7k2p"
    holders = [killed, relabelled, job, canary]
    h.wait_ready("ConsumerGroup", "brain")
    for name in holders:
        h.r.xreadgroup("brain", name, {"orders": ">"}, count=5)

    def runs() -> float:
        return metric(h, "streamherd_janitor_runs_total", consumergroup="brain")

    seen_at = runs()
    wait_until(lambda: runs() >= seen_at + 2, 20, message="the janitor never ran twice")

    h.api.patch(
        "pods",
        h.namespace,
        relabelled,
        {"metadata": {"labels": {"app": "debugging"}, "ownerReferences": None}},
    )
    for name in (killed, job, canary):
        h.api.delete("pods", h.namespace, name, gracePeriodSeconds=0)
    wait_until(
        lambda: killed not in pending_by_consumer(h, "orders", "brain"),
        15,
        message=lambda: (
            f"{killed} not recovered at once: {pending_by_consumer(h, 'orders', 'brain')}"
        ),
    )
    after = runs()
    wait_until(lambda: runs() >= after + 2, 20, message="the janitor never ran twice more")
    pending = pending_by_consumer(h, "orders", "brain")
    assert {name: pending.get(name) for name in (relabelled, job, canary)} == dict.fromkeys(
        (relabelled, job, canary), 5
    ), "none of them taken for dead"

    h.api.delete("pods", h.namespace, relabelled, gracePeriodSeconds=0)
    wait_until(
        lambda: relabelled not in pending_by_consumer(h, "orders", "brain"),
        15,
        message="the relabelled pod, once gone, was not recovered at once",
    )
    assert {job, canary} <= set(pending_by_consumer(h, "orders", "brain"))
