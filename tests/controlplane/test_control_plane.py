"""The real control plane (e2e/controlplane): one test per capability the fixture promises.

RBAC, token expiry, API Priority and Fairness and server-side apply are the API server's own;
the Deployment test checks the whole chain: /scale -> the real Deployment and ReplicaSet
controllers -> pods bound and run by the node agent, with the pod's env (downward API, a
Secret), readiness, restarts, pod-deletion-cost and graceful deletion as a cluster has them."""

from __future__ import annotations

import base64
import concurrent.futures
import threading
import time
from typing import Any

import pytest
from e2e.cluster.client import JSON_PATCH, KubeHTTP, Reply
from e2e.cluster.processes import wait_until
from e2e.controlplane.controlplane import ControlPlane

APPLY = "application/apply-patch+yaml"


def ok(reply: Reply, *codes: int) -> Any:
    assert reply.status in (codes or (200, 201)), f"{reply.status}: {reply.body}"
    return reply.body


def service_account(plane: ControlPlane, namespace: str, name: str) -> None:
    ok(
        plane.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
    )


def grant(plane: ControlPlane, namespace: str, account: str, rules: list[dict[str, Any]]) -> None:
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    ok(
        plane.request(
            "POST",
            f"{rbac}/roles",
            {"kind": "Role", "metadata": {"name": account}, "rules": rules},
        )
    )
    ok(
        plane.request(
            "POST",
            f"{rbac}/rolebindings",
            {
                "kind": "RoleBinding",
                "metadata": {"name": account},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": account,
                },
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            },
        )
    )


def test_rbac_denies_what_a_role_does_not_grant(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    plane, ns = control_plane, kube_namespace
    service_account(plane, ns, "reader")
    grant(
        plane, ns, "reader", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]
    )
    reader = plane.client(token=plane.request_token(ns, "reader"))

    # RBAC is evaluated per request against the informer-fed role cache: wait until it has it.
    wait_until(lambda: reader.get(f"/api/v1/namespaces/{ns}/configmaps").status == 200, 30)
    denied = reader.get(f"/api/v1/namespaces/{ns}/secrets")
    assert (denied.status, denied.reason) == (403, "Forbidden")
    assert denied.message == (
        f'secrets is forbidden: User "system:serviceaccount:{ns}:reader" cannot list resource '
        f'"secrets" in API group "" in the namespace "{ns}"'
    )
    elsewhere = reader.get("/api/v1/namespaces/default/configmaps")
    assert elsewhere.status == 403, "a Role grants nothing outside its namespace"


# Under make e2e: tests/kube/test_client.py lets a real token expire in the suite, and the
# operator's client renews it.
@pytest.mark.e2e_variants
def test_a_short_lived_token_expires_and_a_refreshed_one_works(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    plane, ns = control_plane, kube_namespace
    service_account(plane, ns, "operator")
    grant(
        plane, ns, "operator", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]
    )
    path = f"/api/v1/namespaces/{ns}/configmaps"

    # TokenRequest itself refuses lifetimes under 10 minutes ...
    refused = plane.request(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/operator/token",
        {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "spec": {"expirationSeconds": 60},
        },
    )
    assert refused.status == 422
    assert "may not specify a duration less than 10 minutes" in str(refused.message)
    # ... so the short one is signed with the cluster's key, with TokenRequest's claims.
    short = plane.client(token=plane.signed_service_account_token(ns, "operator", valid_for=4))
    wait_until(lambda: short.get(path).status == 200, 3, message="the fresh token never worked")
    expired = wait_until(
        lambda: (reply := short.get(path)).status == 401 and reply,
        30,
        interval=0.25,
        message="the token never expired",
    )
    assert expired.reason == "Unauthorized"
    refreshed = plane.client(token=plane.request_token(ns, "operator", 600))
    assert refreshed.get(path).status == 200


def test_tight_priority_and_fairness_returns_429_with_retry_after(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    plane, ns = control_plane, kube_namespace
    service_account(plane, ns, "flooder")
    grant(
        plane, ns, "flooder", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]
    )
    flowcontrol = "/apis/flowcontrol.apiserver.k8s.io/v1"
    level = f"tight-{ns}"
    ok(
        plane.request(
            "POST",
            f"{flowcontrol}/prioritylevelconfigurations",
            {
                "kind": "PriorityLevelConfiguration",
                "metadata": {"name": level},
                "spec": {
                    "type": "Limited",
                    "limited": {
                        "nominalConcurrencyShares": 1,  # one seat of the server's total
                        "lendablePercent": 0,
                        "borrowingLimitPercent": 0,
                        "limitResponse": {"type": "Reject"},
                    },
                },
            },
        )
    )
    schema = ok(
        plane.request(
            "POST",
            f"{flowcontrol}/flowschemas",
            {
                "kind": "FlowSchema",
                "metadata": {"name": level},
                "spec": {
                    "priorityLevelConfiguration": {"name": level},
                    "matchingPrecedence": 100,
                    "distinguisherMethod": {"type": "ByUser"},
                    "rules": [
                        {
                            "subjects": [
                                {
                                    "kind": "ServiceAccount",
                                    "serviceAccount": {"name": "flooder", "namespace": ns},
                                }
                            ],
                            "resourceRules": [
                                {
                                    "verbs": ["*"],
                                    "apiGroups": ["*"],
                                    "resources": ["*"],
                                    "namespaces": ["*"],
                                }
                            ],
                        }
                    ],
                },
            },
        )
    )
    try:
        flooder = plane.client(token=plane.request_token(ns, "flooder"))
        path = f"/api/v1/namespaces/{ns}/configmaps"
        # APF picks new configuration up asynchronously: wait until our schema classifies us.
        wait_until(
            lambda: (
                flooder.get(path).headers.get("X-Kubernetes-PF-FlowSchema-UID")
                == schema["metadata"]["uid"]
            ),
            30,
            interval=0.2,
            message="the FlowSchema never applied",
        )
        throttled: list[Reply] = []
        done = threading.Event()

        def flood() -> None:
            deadline = time.monotonic() + 20  # bounded: stops at the first 429 or after 20 s
            while not done.is_set() and time.monotonic() < deadline:
                reply = flooder.get(path)
                if reply.status == 429:
                    throttled.append(reply)
                    done.set()

        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            for future in [pool.submit(flood) for _ in range(24)]:
                future.result()
        assert throttled, "24 clients on one seat were never rejected"
        rejected = throttled[0]
        # APF's rejection is plain text, not a Status object; clients go by Retry-After.
        assert rejected.body == "Too many requests, please try again later.\n"
        assert int(rejected.headers["Retry-After"]) >= 1
        assert rejected.headers["X-Kubernetes-PF-PriorityLevel-UID"]
    finally:
        plane.request("DELETE", f"{flowcontrol}/flowschemas/{level}")
        plane.request("DELETE", f"{flowcontrol}/prioritylevelconfigurations/{level}")


def test_server_side_apply_removes_a_field_its_manager_stops_setting(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    plane, ns = control_plane, kube_namespace
    path = f"/api/v1/namespaces/{ns}/configmaps/settings"

    def apply(manager: str, data: dict[str, str]) -> dict[str, Any]:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": data,
        }
        reply = plane.client().request(
            "PATCH", path, body, content_type=APPLY, params={"fieldManager": manager}
        )
        return ok(reply)  # type: ignore[no-any-return]

    apply("streamherd", {"pollInterval": "2s", "maxReplicas": "4"})
    apply("someone-else", {"owner": "team-a"})
    stored = apply("streamherd", {"pollInterval": "2s"})
    assert stored["data"] == {"pollInterval": "2s", "owner": "team-a"}, (
        "the field streamherd stopped applying is gone; the other manager's stays"
    )
    managers = {m["manager"] for m in stored["metadata"]["managedFields"]}
    assert managers == {"streamherd", "someone-else"}
    conflict = plane.client().request(
        "PATCH",
        path,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"owner": "me"},
        },
        content_type=APPLY,
        params={"fieldManager": "streamherd"},
    )
    assert conflict.status == 409 and "conflict" in str(conflict.message).lower()


SERVER = """
import os, signal, sys, time
print("env", os.environ["POD_NAME"], os.environ["POD_NAMESPACE"], os.environ["POD_UID"],
      os.environ["NODE"], os.environ["TOKEN"], flush=True)
signal.signal(signal.SIGTERM, lambda *_: (print("bye", flush=True), sys.exit(0)))
while True:
    time.sleep(1)
"""


def pods_of(plane: ControlPlane, ns: str, app: str) -> list[dict[str, Any]]:
    listed = ok(plane.request("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{app}"))
    return [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]


def test_a_deployment_scaled_through_scale_gets_pods_from_the_real_controllers(
    control_plane: ControlPlane, node_agent: Any, kube_namespace: str
) -> None:
    plane, ns = control_plane, kube_namespace
    ok(
        plane.request(
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            {
                "kind": "Secret",
                "metadata": {"name": "api"},
                "data": {"token": base64.b64encode(b"s3cret").decode()},
            },
        )
    )
    field = lambda path: {"valueFrom": {"fieldRef": {"fieldPath": path}}}  # noqa: E731
    container = {
        "name": "server",
        "image": "registry.local/server:1",
        "command": ["python", "-c", SERVER],
        "env": [
            {"name": "POD_NAMESPACE", **field("metadata.namespace")},
            {"name": "POD_UID", **field("metadata.uid")},
            {"name": "NODE", **field("spec.nodeName")},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
        ],
    }
    deployments = f"/apis/apps/v1/namespaces/{ns}/deployments"
    ok(
        plane.request(
            "POST",
            deployments,
            {
                "kind": "Deployment",
                "metadata": {"name": "server"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "server"}},
                    "template": {
                        "metadata": {"labels": {"app": "server"}},
                        "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]},
                    },
                },
            },
        )
    )

    def scale_to_3() -> bool:
        # Read-modify-write with optimistic concurrency: the Deployment controller writes the
        # object too, so a stale resourceVersion is a 409 and the client reads again.
        scale = ok(plane.request("GET", f"{deployments}/server/scale"))
        scale["spec"]["replicas"] = 3
        reply = plane.request("PUT", f"{deployments}/server/scale", scale)
        assert reply.status in (200, 409), reply.body
        return reply.status == 200

    wait_until(scale_to_3, 10, interval=0.1)

    running = wait_until(
        lambda: len(node_agent.processes(ns)) == 3 and node_agent.processes(ns),
        60,
        message=lambda: f"pods: {[p['metadata']['name'] for p in pods_of(plane, ns, 'server')]}",
    )
    wait_until(
        lambda: (
            (ok(plane.request("GET", f"{deployments}/server")).get("status") or {}).get(
                "readyReplicas"
            )
            == 3
        ),
        30,
        message="the Deployment controller never counted 3 ready replicas",
    )
    by_name = {p["metadata"]["name"]: p for p in pods_of(plane, ns, "server")}
    assert set(by_name) == set(running)
    for name, pod in by_name.items():
        rs_owner = pod["metadata"]["ownerReferences"][0]
        assert rs_owner["kind"] == "ReplicaSet" and name.startswith(rs_owner["name"] + "-")
        assert pod["spec"]["nodeName"] == node_agent.node_name
        assert pod["status"]["phase"] == "Running"
        line = wait_until(lambda name=name: node_agent.logs(name, ns).strip(), 20)
        uid = pod["metadata"]["uid"]
        assert line == f"env {name} {ns} {uid} {node_agent.node_name} s3cret"

    # A kill is a restart in place, counted in the pod's status.
    victim = sorted(running)[0]
    node_agent.kill(victim, ns)
    wait_until(
        lambda: (
            ok(plane.request("GET", f"/api/v1/namespaces/{ns}/pods/{victim}"))["status"][
                "containerStatuses"
            ][0]["restartCount"]
            == 1
        ),
        30,
        message="the restart never reached the API",
    )

    # Scale-in: the real ReplicaSet controller keeps the pod with the highest deletion cost.
    dear = sorted(running)[1]
    ok(
        plane.request(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/{dear}",
            [
                {
                    "op": "add",
                    "path": "/metadata/annotations",
                    "value": {"controller.kubernetes.io/pod-deletion-cost": "100"},
                }
            ],
            content_type=JSON_PATCH,
        )
    )
    ok(
        plane.request(
            "PATCH",
            f"{deployments}/server/scale",
            {"spec": {"replicas": 1}},
            content_type="application/merge-patch+json",
        )
    )
    wait_until(
        lambda: list(node_agent.processes(ns)) == [dear],
        60,
        message=lambda: f"still running: {node_agent.processes(ns)}",
    )
    # The third pod ran its SIGTERM handler all along (the victim may have been stopped while
    # its restarted interpreter was still starting, before the handler existed).
    (third,) = [n for n in running if n not in (dear, victim)]
    assert "bye" in node_agent.logs(third, ns), "stopped gracefully, with SIGTERM"
    wait_until(lambda: [p["metadata"]["name"] for p in pods_of(plane, ns, "server")] == [dear], 30)


def test_unknown_paths_are_answered_as_the_emulator_answers_them(
    control_plane: ControlPlane, kube_api: Any
) -> None:
    """Where the emulator learned what a real server says: a path under an API group nobody
    serves is the mux's plain-text 404, an unknown resource of a served group a Status."""
    emulator, real = KubeHTTP(kube_api.url), control_plane.client()
    for path in (
        "/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects",
        "/apis/apps/v1/namespaces/default/things",
        "/api/v1/namespaces/default/things",
    ):
        theirs, ours = real.get(path), emulator.get(path)
        assert (ours.status, ours.body) == (theirs.status, theirs.body), path
        assert (
            ours.headers["Content-Type"].split(";")[0]
            == theirs.headers["Content-Type"].split(";")[0]
        )
