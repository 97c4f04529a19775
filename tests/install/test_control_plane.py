"""The chart on the real control plane (e2e/controlplane): every object of both RBAC modes
accepted by the real API server (a server-side dry run: schemas, RBAC escalation checks,
admission); the operator's pod made by the real Deployment and ReplicaSet controllers in a
namespace that enforces the restricted Pod Security profile; the operator, a local process with
a token of the chart's own ServiceAccount (so the real authorizer enforces exactly the rules the
chart renders), reconciling a ConsumerGroup; and Helm's own install (CRDs established), upgrade
to changed values and uninstall (CRDs kept), through helm-python-sdk.

One control plane serves the whole session, so the release is the test's namespace (its
ClusterRoles and ClusterRoleBindings are named after it, removed afterwards) and the operator
watches only that namespace (the chart's watched-namespaces mode): an operator watching every
namespace would reconcile the other tests' objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e import chart
from e2e.cluster.fixtures import CONTROL_PLANE
from e2e.cluster.processes import wait_until
from e2e.controlplane.controlplane import ControlPlane
from tests.harness import Harness

APPLY = "application/apply-patch+yaml"
# The kinds the chart renders (the Prometheus operator's are not installed here): API path.
PATHS = {
    "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Service": "/api/v1/namespaces/{ns}/services",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
}
GROUP_PATH = "/apis/streamherd.io/v1alpha1/namespaces/{ns}/consumergroups"

# The harness's fixtures on the control-plane tier only (the emulator has no authorizer).
pytestmark = pytest.mark.parametrize("kube_tier", [CONTROL_PLANE], indirect=True)


def object_path(obj: dict[str, Any]) -> str:
    base = PATHS[obj["kind"]].format(ns=obj["metadata"].get("namespace"))
    return f"{base}/{obj['metadata']['name']}"


def apply(plane: ControlPlane, obj: dict[str, Any], **params: str) -> dict[str, Any]:
    """Server-side apply, as Helm 4 installs a release (with a field manager of the tests')."""
    reply = plane.request(
        "PATCH",
        object_path(obj),
        obj,
        content_type=APPLY,
        params={"fieldManager": "streamherd-tests", "force": "true", **params},
    )
    assert reply.status in (200, 201), f"{obj['kind']} {obj['metadata']['name']}: {reply.body}"
    return reply.body  # type: ignore[no-any-return]


def established(plane: ControlPlane, crd: str) -> bool:
    body = plane.request("GET", f"{PATHS['CustomResourceDefinition']}/{crd}").body
    conditions = {c["type"]: c["status"] for c in body["status"].get("conditions", [])}
    return conditions.get("Established") == "True"


@pytest.fixture
def release(control_plane: ControlPlane, kube_namespace: str) -> Iterator[str]:
    """The release name (the test's namespace); its cluster-scoped RBAC removed afterwards."""
    yield kube_namespace
    for obj in chart.render({}, name=kube_namespace, namespace=kube_namespace):
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            control_plane.request("DELETE", object_path(obj))


def test_every_object_of_every_mode_is_accepted_by_the_api_server(
    control_plane: ControlPlane, kube_namespace: str, release: str
) -> None:
    everything = {
        "prometheusRule": {"enabled": False},  # no Prometheus operator CRDs here
        "grafanaDashboard": {"enabled": True},
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": {"enabled": True},
    }
    objects = [
        *chart.render(everything, name=release, namespace=kube_namespace),
        *chart.render(
            {**everything, "watchNamespaces": [kube_namespace]},
            name=release,
            namespace=kube_namespace,
        ),
    ]
    assert {o["kind"] for o in objects} == set(PATHS)
    for obj in objects:
        stored = apply(control_plane, obj, dryRun="All")
        assert stored["kind"] == obj["kind"]


def test_the_chart_installs_and_its_service_account_runs_the_operator(
    control_plane: ControlPlane,
    kube_namespace: str,
    release: str,
    harness: Harness,
    tmp_path: Path,
) -> None:
    plane, ns = control_plane, kube_namespace
    # What manifests/install.yaml's Namespace enforces: the pod must pass real admission.
    labelled = plane.request(
        "PATCH",
        f"/api/v1/namespaces/{ns}",
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        content_type="application/merge-patch+json",
    )
    assert labelled.status == 200, labelled.body
    # The session's CRDs are the chart's (tests/install/test_chart.py); Helm's own install of
    # them is the next test's (server-side apply here would take their fields from Helm there).
    objects = chart.render(
        {"watchNamespaces": [ns], "crds": {"enabled": False}}, name=release, namespace=ns
    )
    for obj in objects:
        apply(plane, obj)

    # The real Deployment and ReplicaSet controllers make the operator's pod, and the
    # PodSecurity admission plugin lets it into the restricted namespace.
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )

    def operator_pod() -> dict[str, Any] | None:
        pods = plane.request("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")
        items = pods.body["items"]
        return items[0] if items else None

    def replica_failure() -> str:
        replica_sets = plane.request("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets").body
        return str([rs.get("status", {}).get("conditions") for rs in replica_sets["items"]])

    pod = wait_until(
        operator_pod,
        60,
        message=lambda: f"no operator pod; ReplicaSet conditions: {replica_failure()}",
    )
    assert pod["spec"]["serviceAccountName"] == f"{release}-streamherd"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"

    # The operator, with the chart's ServiceAccount token and the Deployment's environment.
    account = pod["spec"]["serviceAccountName"]
    token = plane.client(token=plane.request_token(ns, account))
    # RBAC is evaluated against the informer-fed role cache: wait until the bindings are in it.
    wait_until(
        lambda: (
            token.get(GROUP_PATH.format(ns=ns)).status == 200
            and token.get(PATHS["CustomResourceDefinition"]).status == 200
        ),
        30,
        message="the chart's ServiceAccount never got its rules",
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The downward API's fields, as the kubelet fills them in (the Lease's namespace is the pod's).
    downward = {"metadata.namespace": ns, "metadata.name": "streamherd-0"}
    harness.operator_env.update(
        {
            e["name"]: e["value"]
            if "value" in e
            else downward[e["valueFrom"]["fieldRef"]["fieldPath"]]
            for e in container["env"]
        },
        KUBECONFIG=str(
            plane.service_account_kubeconfig(tmp_path / "chart.kubeconfig", ns, account)
        ),
    )
    assert harness.operator_env["STREAMHERD_NAMESPACES"] == ns
    harness.watch_namespace = False  # the chart's environment says which namespace
    harness.stream("orders")
    harness.group("fulfilment", startId="0")
    harness.start()
    harness.wait_ready("ConsumerGroup", "fulfilment", timeout=60)
    assert "fulfilment" in harness.groups_in_redis("orders")
    assert "is the leader of lease" in harness.logs()  # leader election, with the chart's Role
    forbidden = [line for line in harness.logs().splitlines() if "forbidden" in line.lower()]
    assert not forbidden, forbidden


def test_helm_installs_upgrades_and_uninstalls_keeping_the_crds(
    control_plane: ControlPlane, kube_namespace: str, release: str
) -> None:
    """Helm's own install, upgrade and uninstall (helm-python-sdk's Go SDK) against the real API
    server. The session's CRDs are adopted into the release first (Helm's ownership annotations),
    as a user's would be when moving from `kubectl apply -f crds/` to the chart."""
    import helm_python

    plane, ns = control_plane, kube_namespace
    crds = [
        o["metadata"]["name"] for o in chart.render() if o["kind"] == "CustomResourceDefinition"
    ]
    for name in crds:
        adopted = plane.request(
            "PATCH",
            f"{PATHS['CustomResourceDefinition']}/{name}",
            {
                "metadata": {
                    "labels": {"app.kubernetes.io/managed-by": "Helm"},
                    "annotations": {
                        "meta.helm.sh/release-name": release,
                        "meta.helm.sh/release-namespace": ns,
                    },
                }
            },
            content_type="application/merge-patch+json",
        )
        assert adopted.status == 200, adopted.body
    helm = helm_python.Config(kubeconfig_path=plane.kubeconfig(), namespace=ns)
    try:
        values: dict[str, Any] = {"watchNamespaces": [ns]}
        installed = helm.install(chart.chart(), release, values, namespace=ns, timeout=60)
        assert (installed["revision"], installed["status"]) == (1, "deployed"), installed
        for name in crds:
            wait_until(lambda n=name: established(plane, n), 30, message=f"{name} not Established")
        deployment = f"{PATHS['Deployment'].format(ns=ns)}/{release}-streamherd"

        def image() -> str:
            body = plane.request("GET", deployment).body
            return str(body["spec"]["template"]["spec"]["containers"][0]["image"])

        assert image().endswith(f":{chart.chart().metadata['appVersion']}")

        upgraded = helm.upgrade(
            chart.chart(), release, {**values, "image": {"tag": "9.9.9"}}, namespace=ns, timeout=60
        )
        assert (upgraded["revision"], upgraded["status"]) == (2, "deployed"), upgraded
        assert image() == "ghcr.io/streamherd/streamherd:9.9.9"

        helm.uninstall(release, timeout=60)
        wait_until(
            lambda: plane.request("GET", deployment).status == 404,
            30,
            message="the Deployment outlived the uninstall",
        )
        role = f"{PATHS['ClusterRole']}/{release}-streamherd"
        assert plane.request("GET", role).status == 404, "uninstall left the ClusterRole"
        for name in crds:
            kept = plane.request("GET", f"{PATHS['CustomResourceDefinition']}/{name}")
            assert kept.status == 200 and not kept.body["metadata"].get("deletionTimestamp"), (
                f"uninstall deleted CRD {name}"
            )
    finally:
        helm.close()
