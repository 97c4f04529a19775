"""RBAC proven sufficient and minimal on the real control plane: one operator, run with a token
of the chart's own ServiceAccount (the chart's default mode: every namespace, one ClusterRole),
goes through the features (a group taking over a Redis group whose claim's ConsumerGroup is
gone, an autoscaled group with an owned Deployment scaling up and in with
pod-deletion-cost, the janitor in mode Operator and in mode CronJob — the CronJob's command
`streamherd janitor` run with the chart's janitor ServiceAccount token —, retention deleting a
finished call's stream, leader election on its Lease, Events, the HPA/ScaledObject lookups, a
Redis URL from a Secret). The API server's audit log (``ControlPlane(audit=True)``) then says
which rule each request of the two ServiceAccounts used (e2e/controlplane/audit.py): no request
was denied, and every verb on every resource of files/rbac.yaml was used, except NOT_SEEN_HERE
(each with the reason).

It has a control plane of its own (about 5 s to start): the session's serves other tests'
operators, and this one watches every namespace, as the chart installs it by default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e import chart
from e2e.cluster.objects import ClusterObjects
from e2e.cluster.processes import OperatorProcess, wait_until
from e2e.cluster.redis import RedisServer
from e2e.controlplane import audit, rbac
from e2e.controlplane.controlplane import ControlPlane
from tests.harness import Harness
from tests.install.test_control_plane import apply, established

from streamherd.keys import owners_key

NAMESPACE = RELEASE = "streamherd"

# Grants no request here uses, and why (each (part, verb, group/resource) of files/rbac.yaml).
NOT_SEEN_HERE = {
    # Checked by the OwnerReferencesPermissionEnforcement admission plugin when the operator
    # creates the owned Deployment and the CronJob with blockOwnerDeletion: an authorizer call
    # inside another request, which the audit log does not record as a request of its own.
    # tests/security/test_rbac.py takes it away and sees the create refused.
    ("operator", "update", "streamherd.io/consumergroups/finalizers"),
    # An Event's count is patched when one process posts the same reason for the same object
    # again (the operator's is used below); `streamherd janitor` is one pass, which posts each
    # reason once here (DeadLettered at most once a pass). Kept so that a repeat within a run
    # is not a 403 (the janitor shares the operator's Events writer); not provoked here.
    ("janitor", "patch", "core/events"),
}


@pytest.fixture(scope="module")
def audited_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Any]]:
    plane = ControlPlane(base_dir=tmp_path_factory.mktemp("audited-plane"), audit=True).start()
    node = None
    try:
        node = plane.start_node_agent(stop_grace=0.5)
        yield plane, node
    finally:
        if node is not None:
            node.stop()
            node.cleanup()
        plane.cleanup()


def grant_id(g: audit.Grant) -> tuple[str, str, str]:
    return (g.part, g.verb, f"{g.api_group or 'core'}/{g.resource}")


def wait_rules(plane: ControlPlane, user: str, verb: str, resource: str, **attributes: str) -> None:
    """Until the authorizer's role cache (informer-fed) has the user's bindings: asked through a
    SubjectAccessReview as admin, so the wait adds no request of the user's to the audit log."""
    group, _, plural = resource.rpartition("/")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {"verb": verb, "group": group, "resource": plural, **attributes},
        },
    }

    def allowed() -> bool:
        reply = plane.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(reply.body.get("status", {}).get("allowed"))

    wait_until(allowed, 30, message=f"{user} never allowed to {verb} {resource}")


def test_every_request_is_allowed_and_every_rule_is_used(
    audited_plane: tuple[ControlPlane, Any], tmp_path: Path
) -> None:
    plane, node = audited_plane
    ns = NAMESPACE
    plane.create_namespace(ns)
    # The chart's objects with default values (the operator's Deployment left out: its pod
    # would be a second operator; the process below is the one, with the same environment).
    objects = chart.render({}, name=RELEASE, namespace=ns)
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Service"):
            apply(plane, obj)
    for obj in objects:
        if obj["kind"] == "CustomResourceDefinition":
            name = obj["metadata"]["name"]
            wait_until(lambda n=name: established(plane, n), 30, message=f"{name} not Established")
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    downward = {"metadata.namespace": ns, "metadata.name": "streamherd-0"}
    env = {
        e["name"]: e["value"] if "value" in e else downward[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container["env"]
    }
    assert "STREAMHERD_NAMESPACES" not in env, "the default mode watches every namespace"
    operator_sa, janitor_sa = (
        pod_spec["serviceAccountName"],
        env["STREAMHERD_JANITOR_SERVICE_ACCOUNT"],
    )
    user = "system:serviceaccount:{}:{}".format
    wait_rules(plane, user(ns, operator_sa), "list", "streamherd.io/consumergroups")
    wait_rules(plane, user(ns, operator_sa), "get", "coordination.k8s.io/leases", namespace=ns)
    wait_rules(plane, user(ns, janitor_sa), "list", "/pods", namespace=ns)

    redis_server = RedisServer(version="7.0").start()
    admin = plane.write_kubeconfig(tmp_path / "admin.kubeconfig", "admin", ns)
    operator_config = plane.service_account_kubeconfig(
        tmp_path / "operator.kubeconfig", ns, operator_sa
    )
    janitor_config = plane.service_account_kubeconfig(
        tmp_path / "janitor.kubeconfig", ns, janitor_sa
    )
    started: list[OperatorProcess] = []

    def run(
        cmd: list[str], env: dict[str, str] | None = None, kubeconfig: Path = operator_config
    ) -> OperatorProcess:
        proc = OperatorProcess(
            cmd, kubeconfig=kubeconfig, log_path=tmp_path / f"process-{len(started)}.log", env=env
        )
        started.append(proc)
        return proc.start()

    h = Harness(
        api=ClusterObjects(admin), redis_server=redis_server, start_operator=run, namespace=ns
    )
    h.operator_env.update(env, KUBECONFIG=str(operator_config))
    try:
        scenario(h, run, janitor_config, node)
    finally:
        for proc in started:
            proc.stop()
        h.r.close()
        redis_server.cleanup()

    # Every request the two made is in the log once a later one is (the blocking backend
    # writes an event before its request's handler returns): a marker request of a third account.
    plane.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "marker"}}
    )
    marker = plane.client(token=plane.request_token(ns, "marker"))
    marker.get(f"/api/v1/namespaces/{ns}/pods")
    wait_until(
        lambda: any(e["user"]["username"] == user(ns, "marker") for e in plane.audit_events()),
        10,
        message="the marker request never reached the audit log",
    )
    parts = {
        user(ns, operator_sa): [
            audit.Binding("cluster", rbac.CLUSTER_RULES),
            audit.Binding("operator", rbac.OPERATOR_RULES),
            audit.Binding("leader", rbac.LEADER_RULES, ns),
        ],
        user(ns, janitor_sa): [audit.Binding("janitor", rbac.JANITOR_RULES, ns)],
    }
    result = audit.report(plane.audit_events(), parts)
    print("\n".join(["RBAC audit (requests per grant):", *result.lines()]))
    assert not result.denied, [str(r) for r in result.denied]
    assert not result.outside, [str(r) for r in result.outside]
    unused = {grant_id(g) for g in result.unused}
    assert unused == NOT_SEEN_HERE, (
        f"grants no request used: {sorted(unused - NOT_SEEN_HERE)}; used after all: {sorted(NOT_SEEN_HERE - unused)}"
    )


def idle_ms(h: Harness, key: str, group: str) -> int:
    """The shortest idle time of the group's pending entries (Redis's clock)."""
    return min(
        int(row["time_since_delivered"]) for row in h.r.xpending_range(key, group, "-", "+", 100)
    )


def scenario(h: Harness, run: Any, janitor_config: Path, node: Any) -> None:
    ns = h.namespace
    h.create("Secret", "invoices-redis", stringData={"url": h.redis_server.url})
    h.stream("orders")
    h.stream(
        "invoices", key="invoices", redis={"urlSecretRef": {"name": "invoices-redis", "key": "url"}}
    )
    h.stream("calls", key=None, keyPattern="conv:*", retentionPolicyRef={"name": "calls"})
    h.create("RetentionPolicy", "calls", {"deleteIdleStreamsAfter": "2s", "interval": "1s"})
    template = {
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "worker",
                    "image": "workers:1",
                    "command": ["python", "-m", "e2e.consumer"],
                    "env": [{"name": "WORK_MS", "value": "20"}],
                }
            ],
        }
    }
    h.group(
        "workers",
        startId="0",
        consumers={"template": template},
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 2,
            "targetPerReplica": 50,
            "pollInterval": "500ms",
            "scaleDown": {"stabilizationWindow": "0s"},
        },
        recovery={"minIdle": "1s", "interval": "1s"},
    )
    recovery = {
        "mode": "CronJob",
        "schedule": "*/5 * * * *",
        "minIdle": "1s",
        "interval": "1s",
        "maxDeliveries": 3,
        "batchSize": 1,
    }
    # Billing's consumers (none running): the janitor finds their pods by its selector.
    h.consumer_deployment("billers", 0, "billing", stream="invoices")
    h.group(
        "billing",
        stream="invoices",
        startId="0",
        consumers={"deploymentRef": {"name": "billers"}},
        recovery=recovery,
    )
    h.group(
        "ledger",
        stream="invoices",
        startId="0",
        recovery={"mode": "Operator", "minIdle": "1s", "interval": "1s"},
    )
    h.group("brain", stream="calls", startId="0")
    # A group whose RedisStream does not exist: its loop asks the API server whether the
    # stream is only starting (get redisstreams, a 404) before it says StreamNotReady. (A
    # group's first step before its stream's loop has bound asks the same: a race, not this.)
    h.group("orphan", stream="missing")
    # A claim on Redis group "agents" left by a ConsumerGroup deleted while no operator ran:
    # "archive" checks (a GET) that its holder is gone before it takes the group.
    ghost = {"namespace": ns, "name": "ghost", "kind": "key", "text": "invoices", "seq": 1}
    h.r.hset(owners_key("agents"), mapping={"#seq": 1, "ghost-uid": json.dumps(ghost)})
    h.group("archive", stream="invoices", groupName="agents")
    pipe = h.r.pipeline(transaction=False)
    for i in range(300):
        pipe.xadd("orders", {"msg": f"m{i}"})
    for i in range(10):
        pipe.xadd("invoices", {"msg": f"i{i}"})
        pipe.xadd("conv:done", {"n": i})
    pipe.execute()
    h.start()
    wait_until(lambda: "is the leader of lease" in h.logs(), 30, message=lambda: h.logs()[-3000:])
    h.wait_ready("ConsumerGroup", "archive", timeout=30)
    h.wait_ready("ConsumerGroup", "orphan", "False", "StreamNotReady", timeout=30)
    assert not h.r.hexists(owners_key("agents"), "ghost-uid")

    # Autoscaling: the owned Deployment, up to 2 for the backlog, back to 1 with the
    # deletion costs set on its pods first.
    def replicas() -> int | None:
        d = h.api.get("deployments.apps", ns, "workers-consumers")
        return d["spec"].get("replicas") if d else None

    wait_until(
        lambda: replicas() == 2, 30, message=lambda: f"never 2: {replicas()}\n{h.logs()[-3000:]}"
    )
    wait_until(
        lambda: h.r.scard("processed:workers") == 300,
        60,
        message=lambda: f"processed {h.r.scard('processed:workers')}",
    )
    wait_until(lambda: replicas() == 1, 30, message=lambda: f"never back to 1\n{h.logs()[-3000:]}")
    costs = [
        p["metadata"].get("annotations", {}).get("controller.kubernetes.io/pod-deletion-cost")
        for p in h.api.list("pods", ns)
    ]
    assert any(c is not None for c in costs), costs
    # A second burst: the same Event again (ScaledUp) is a patch of its count.
    pipe = h.r.pipeline(transaction=False)
    for i in range(300):
        pipe.xadd("orders", {"msg": f"n{i}"})
    pipe.execute()
    wait_until(lambda: replicas() == 2, 30, message=lambda: f"never 2 again\n{h.logs()[-3000:]}")

    # The janitor in mode Operator: a crashed reader's entries are recovered.
    wait_until(lambda: "ledger" in h.groups_in_redis("invoices"), 20)
    h.r.xreadgroup("ledger", "gone-worker", {"invoices": ">"}, count=10)
    h.wait_status("ConsumerGroup", "ledger", lambda s: s.get("recovered") == 10, timeout=30)

    # The janitor in mode CronJob: the operator keeps the CronJob (and changes it with the
    # spec), its command runs with the janitor's account, and mode Operator deletes it.
    cron = wait_until(
        lambda: h.api.get("cronjobs.batch", ns, "billing-janitor"),
        20,
        message=lambda: h.logs()[-3000:],
    )
    (job_container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    h.patch(
        "ConsumerGroup", "billing", {"spec": {"recovery": {**recovery, "schedule": "*/7 * * * *"}}}
    )
    wait_until(
        lambda: (
            (h.api.get("cronjobs.batch", ns, "billing-janitor") or {})
            .get("spec", {})
            .get("schedule")
            == "*/7 * * * *"
        ),
        20,
        message=lambda: h.logs()[-3000:],
    )
    h.r.xreadgroup("billing", "gone-worker", {"invoices": ">"}, count=10)
    for _ in range(2):  # two entries delivered 3 times (maxDeliveries): dead-lettered
        h.r.xreadgroup("billing", "gone-worker", {"invoices": "0"}, count=2)
    wait_until(lambda: idle_ms(h, "invoices", "billing") > 1100, 10)  # past minIdle (1s)
    job = run(job_container["command"], kubeconfig=janitor_config)
    wait_until(lambda: not job.running, 30, message=lambda: job.logs())
    assert job.returncode == 0, job.logs()
    assert "recovered 8 (re-queued 8, claimed 0), dead-lettered 2" in job.logs(), job.logs()
    h.patch("ConsumerGroup", "billing", {"spec": {"recovery": {"mode": "Operator"}}})
    wait_until(
        lambda: h.api.get("cronjobs.batch", ns, "billing-janitor") is None,
        20,
        message=lambda: h.logs()[-3000:],
    )

    # Retention: the finished call's stream (read and acknowledged) is deleted.
    wait_until(lambda: "brain" in h.groups_in_redis("conv:done"), 20)
    delivered = h.r.xreadgroup("brain", "c1", {"conv:done": ">"}, count=10)
    h.r.xack("conv:done", "brain", *[entry_id for entry_id, _ in delivered[0][1]])
    wait_until(lambda: not h.r.exists("conv:done"), 30, message=lambda: h.logs()[-3000:])
    h.wait_status("RetentionPolicy", "calls", lambda s: s.get("deletedStreams"))
    forbidden = [line for line in h.logs().splitlines() if "forbidden" in line.lower()]
    assert not forbidden, forbidden
