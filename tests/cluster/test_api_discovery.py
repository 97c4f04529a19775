"""Discovery: what the API server says it serves (kopf and kubectl build their clients from it)."""

from __future__ import annotations

from typing import Any

from e2e.cluster.client import KubeHTTP
from tests.cluster.conftest import WIDGET_CRD, widget


def _resources(http: KubeHTTP, group_version: str) -> dict[str, Any]:
    path = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
    reply = http.get(path)
    assert reply.status == 200, reply.body
    assert reply["kind"] == "APIResourceList"
    return {r["name"]: r for r in reply["resources"]}


def test_core_resources_are_discoverable(http: KubeHTTP) -> None:
    """/api lists v1; /api/v1 lists the core resources with kind, scope, verbs, subresources."""
    assert http.get("/api")["versions"] == ["v1"]
    core = _resources(http, "v1")
    for name in ("namespaces", "events", "secrets", "pods", "configmaps"):
        assert name in core
    assert core["namespaces"]["namespaced"] is False
    assert core["pods"]["namespaced"] is True
    assert core["pods"]["kind"] == "Pod"
    assert "watch" in core["events"]["verbs"]
    assert "pods/status" in core
    assert "pods/log" in core


def test_group_resources_are_discoverable(http: KubeHTTP) -> None:
    """/apis lists groups with a preferred version; each group-version lists its resources."""
    groups = {g["name"]: g for g in http.get("/apis")["groups"]}
    for name in (
        "apps",
        "batch",
        "autoscaling",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "kopf.dev",
        "streamherd.io",
    ):
        assert name in groups, name
    assert groups["streamherd.io"]["preferredVersion"]["version"] == "v1alpha1"
    assert {"deployments", "deployments/scale", "deployments/status"} <= set(
        _resources(http, "apps/v1")
    )
    assert {"jobs", "cronjobs"} <= set(_resources(http, "batch/v1"))
    assert "horizontalpodautoscalers" in _resources(http, "autoscaling/v2")
    assert "leases" in _resources(http, "coordination.k8s.io/v1")
    crds = _resources(http, "apiextensions.k8s.io/v1")["customresourcedefinitions"]
    assert crds["namespaced"] is False
    kopf = _resources(http, "kopf.dev/v1")
    assert kopf["clusterkopfpeerings"]["namespaced"] is False
    assert kopf["kopfpeerings"]["namespaced"] is True
    scale = _resources(http, "apps/v1")["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")


def test_our_crds_come_from_the_crds_folder(http: KubeHTTP) -> None:
    """The CRDs in crds/ are installed as CRD objects, so their resources are served."""
    ours = _resources(http, "streamherd.io/v1alpha1")
    assert {"consumergroups", "redisstreams", "retentionpolicies"} <= set(ours)
    assert ours["consumergroups"]["kind"] == "ConsumerGroup"
    assert "consumergroups/status" in ours
    names = {
        c["metadata"]["name"]
        for c in http.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
    }
    assert "consumergroups.streamherd.io" in names
    crd = http.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/consumergroups.streamherd.io"
    ).body
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established == {"NamesAccepted": "True", "Established": "True"}


def test_a_created_crd_is_served_and_a_deleted_one_is_gone(http: KubeHTTP) -> None:
    """Creating a CRD registers a new resource; deleting it deletes its objects and the resource."""
    assert http.get("/apis/test.streamherd.io/v1").status == 404
    assert (
        http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD).status
        == 201
    )
    assert "widgets" in _resources(http, "test.streamherd.io/v1")
    collection = "/apis/test.streamherd.io/v1/namespaces/default/widgets"
    assert http.post(collection, widget("w1")).status == 201

    reply = http.delete(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.test.streamherd.io"
    )
    assert reply.status == 200
    assert http.get("/apis/test.streamherd.io/v1").status == 404
    assert http.get(collection).status == 404
    assert (
        http.get(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.test.streamherd.io"
        ).status
        == 404
    )


def test_unknown_paths_get_404_as_kube_apiserver_answers_them(http: KubeHTTP) -> None:
    """Under an API group nobody serves, the path is unknown to the server's mux: plain text
    "404 page not found" (checked against kube-apiserver 1.37), not a Status. Under a served
    group, an unknown resource is a Status 404 with empty details."""
    reply = http.get("/apis/nothing.example.com/v1/things")
    assert (reply.status, reply.body) == (404, "404 page not found\n")
    assert reply.headers["Content-Type"].startswith("text/plain")
    reply = http.get("/apis/apps/v1/namespaces/default/things")
    assert reply.status == 404
    assert reply.body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server could not find the requested resource",
        "reason": "NotFound",
        "details": {},
        "code": 404,
    }
    assert http.get("/version")["major"] == "1"
