"""The audit report's matching (e2e/controlplane/audit.py), on hand-written audit events: what
the real-server test (test_rbac_audit.py) counts on."""

from __future__ import annotations

from typing import Any

from e2e.controlplane import audit

USER = "system:serviceaccount:ops:streamherd"
RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
]
LEASE = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["streamherd"],
        "verbs": ["get"],
    }
]
BINDINGS = {
    USER: [audit.Binding("operator", RULES), audit.Binding("leader", LEASE, namespace="ops")]
}


def event(
    verb: str,
    resource: str,
    *,
    group: str = "apps",
    namespace: str = "ops",
    name: str = "x",
    code: int = 200,
    stage: str = "ResponseComplete",
    audit_id: str | None = None,
    user: str = USER,
) -> dict[str, Any]:
    plural, _, sub = resource.partition("/")
    ref: dict[str, Any] = {"resource": plural, "apiGroup": group, "namespace": namespace}
    if sub:
        ref["subresource"] = sub
    if name:
        ref["name"] = name
    return {
        "auditID": audit_id or f"{verb}-{resource}-{namespace}-{name}-{code}-{user}",
        "stage": stage,
        "verb": verb,
        "user": {"username": user},
        "objectRef": ref,
        "responseStatus": {"code": code},
    }


def counts(report: audit.Report) -> dict[str, int]:
    return {str(g): n for g, n in report.counts.items()}


def test_subresources_resource_names_and_namespaces_are_matched_as_rbac_does() -> None:
    report = audit.report(
        [
            event("patch", "deployments/scale"),
            event("get", "leases", group="coordination.k8s.io", name="streamherd"),
            # Another Lease's name, and the right name in another namespace: no rule of ours.
            event("get", "leases", group="coordination.k8s.io", name="other"),
            event("get", "leases", group="coordination.k8s.io", name="streamherd", namespace="b"),
            event("get", "deployments", code=403),
            event("get", "pods", group="", user="system:serviceaccount:ops:someone-else"),
        ],
        BINDINGS,
    )
    assert counts(report) == {
        "operator[0] get apps/deployments": 0,
        "operator[0] create apps/deployments": 0,
        "operator[0] patch apps/deployments": 0,
        "operator[1] patch apps/deployments/scale": 1,
        "leader[0] get coordination.k8s.io/leases": 1,
    }
    assert [str(r) for r in report.outside] == [
        "get coordination.k8s.io/leases other in ops -> 200",
        "get coordination.k8s.io/leases streamherd in b -> 200",
    ]
    assert [str(r) for r in report.denied] == ["get apps/deployments x in ops -> 403"]
    assert [str(g) for g in report.unused] == [
        "operator[0] create apps/deployments",
        "operator[0] get apps/deployments",
        "operator[0] patch apps/deployments",
    ]


def test_an_apply_that_creates_uses_create_too_and_a_request_counts_once() -> None:
    created = event("patch", "deployments", code=201, stage="ResponseStarted", audit_id="a")
    report = audit.report(
        [created, {**created, "stage": "ResponseComplete"}, event("get", "x", group="")], BINDINGS
    )
    used = {str(g) for g, n in report.counts.items() if n}
    assert used == {"operator[0] patch apps/deployments", "operator[0] create apps/deployments"}
    assert report.requests == 2 and len(report.outside) == 1
    # A patch that creates, where create is not granted: outside the rules.
    rules = {USER: [audit.Binding("operator", [{**RULES[0], "verbs": ["patch"]}])]}
    assert len(audit.report([created], rules).outside) == 1


def test_requests_without_an_object_are_discovery() -> None:
    discovery = {
        "auditID": "d",
        "stage": "ResponseComplete",
        "verb": "get",
        "user": {"username": USER},
    }
    report = audit.report([discovery], BINDINGS)
    assert (report.requests, report.discovery, report.outside) == (1, 1, [])
