"""The RBAC the operator runs with on the control-plane tier. The rules have one source,
``helm/streamherd/files/rbac.yaml``, which the chart's Roles and ClusterRoles are rendered from
too: OPERATOR_RULES (a Role in each watched namespace), CLUSTER_RULES and NAMESPACES_RULES (kopf's
observers of CRDs and, watching fixed namespaces, of namespaces: a ClusterRole), JANITOR_RULES (what `streamherd janitor` does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from e2e.controlplane.controlplane import ControlPlane

RULES_FILE = Path(__file__).resolve().parents[2] / "helm" / "streamherd" / "files" / "rbac.yaml"
_RULES: dict[str, list[dict[str, Any]]] = yaml.safe_load(RULES_FILE.read_text())
OPERATOR_RULES = _RULES["operator"]  # in each namespace it watches
CLUSTER_RULES = _RULES["cluster"]  # kopf's observer of CRDs
NAMESPACES_RULES = _RULES["namespaces"]  # kopf's observer of namespaces, given fixed ones
JANITOR_RULES = _RULES["janitor"]  # `streamherd janitor`, a CronJob's pod
LEADER_RULES = _RULES["leader"]  # the Lease of leader election, in the operator's namespace


def operator_kubeconfig(
    plane: ControlPlane, namespace: str, path: Path, name: str = "streamherd"
) -> Path:
    """A ServiceAccount ``name`` in ``namespace`` bound to OPERATOR_RULES and LEADER_RULES there
    (the operator's Lease lives in the namespace it runs in); its kubeconfig
    (a TokenRequest token of an hour) written to ``path``."""
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    cluster = "/apis/rbac.authorization.k8s.io/v1"
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    for path_, body in (
        (
            f"{cluster}/clusterroles",
            {
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": CLUSTER_RULES + NAMESPACES_RULES,
            },
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
        (
            f"{rbac}/roles",
            {"kind": "Role", "metadata": {"name": name}, "rules": OPERATOR_RULES + LEADER_RULES},
        ),
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


__all__ = [
    "CLUSTER_RULES",
    "JANITOR_RULES",
    "LEADER_RULES",
    "NAMESPACES_RULES",
    "OPERATOR_RULES",
    "RULES_FILE",
    "operator_kubeconfig",
]
