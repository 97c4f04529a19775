"""The RBAC the operator runs with on the control-plane tier: exactly what the README's "Run it
on a cluster" section says ``streamherd run`` needs: OPERATOR_RULES as a Role in the namespace
it watches, CLUSTER_RULES (kopf's observers of CRDs and namespaces) as a ClusterRole. A
permission the operator uses but the README does not list fails the operator's tests there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.controlplane.controlplane import ControlPlane

OPERATOR_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["streamherd.io"],
        "resources": [
            f"{plural}{sub}"
            for plural in ("redisstreams", "consumergroups", "retentionpolicies")
            for sub in ("", "/status")
        ],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list", "watch"]},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list"]},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["list"]},
    {
        "apiGroups": ["batch"],
        "resources": ["cronjobs"],
        "verbs": ["get", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


# kopf discovers its resources by watching CRDs, and namespaces even when given fixed ones.
CLUSTER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def operator_kubeconfig(
    plane: ControlPlane, namespace: str, path: Path, name: str = "streamherd"
) -> Path:
    """A ServiceAccount ``name`` in ``namespace`` bound to OPERATOR_RULES there; its kubeconfig
    (a TokenRequest token of an hour) written to ``path``."""
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    cluster = "/apis/rbac.authorization.k8s.io/v1"
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    for path_, body in (
        (
            f"{cluster}/clusterroles",
            {"kind": "ClusterRole", "metadata": {"name": name}, "rules": CLUSTER_RULES},
        ),
        (
            f"{cluster}/clusterrolebindings",
            {
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{name}-{namespace}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [subject],
            },
        ),
        (
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        ),
        (f"{rbac}/roles", {"kind": "Role", "metadata": {"name": name}, "rules": OPERATOR_RULES}),
        (
            f"{rbac}/rolebindings",
            {
                "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [subject],
            },
        ),
    ):
        reply = plane.request("POST", path_, body)
        if reply.status not in (201, 409):
            raise RuntimeError(f"cannot create {path_}: {reply.status} {reply.body}")
    return plane.service_account_kubeconfig(path, namespace, name)


__all__ = ["CLUSTER_RULES", "OPERATOR_RULES", "operator_kubeconfig"]
