"""Writes: metadata stamping, optimistic concurrency, generation, the status subresource, patches."""

from __future__ import annotations

import re
from typing import Any

from e2e.cluster.client import JSON_PATCH, MERGE, STRATEGIC, KubeHTTP
from tests.cluster.conftest import widget


def test_create_stamps_uid_timestamp_resource_version_and_generation(
    http: KubeHTTP, widgets: str
) -> None:
    """The server sets uid, creationTimestamp, resourceVersion and generation=1 on create,
    ignoring client-sent values; resourceVersions grow across all resources (one etcd)."""
    body = widget("w1", size=1)
    body["metadata"].update(
        uid="mine", resourceVersion="999", generation=7, creationTimestamp="2000-01-01T00:00:00Z"
    )
    first = http.post(widgets, body)
    assert first.status == 201
    meta = first["metadata"]
    assert meta["uid"] != "mine"
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert meta["generation"] == 1
    assert meta["creationTimestamp"] != "2000-01-01T00:00:00Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    cm = http.post("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "c"}, "data": {}})
    assert int(cm["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert http.get(f"{widgets}/w1")["metadata"] == meta


def test_create_conflicts_and_generate_name(http: KubeHTTP, widgets: str) -> None:
    """A second create of a name is 409 AlreadyExists; generateName gets a random suffix."""
    assert http.post(widgets, widget("w1")).status == 201
    again = http.post(widgets, widget("w1"))
    assert again.status == 409
    assert again.reason == "AlreadyExists"
    assert again["message"] == 'widgets.test.streamherd.io "w1" already exists'
    generated = http.post(widgets, {**widget(""), "metadata": {"generateName": "w-"}})
    assert generated.status == 201
    assert re.fullmatch(r"w-[a-z0-9]{5}", generated["metadata"]["name"])


def test_missing_objects_and_namespaces_are_404(http: KubeHTTP, widgets: str) -> None:
    """Reading a missing object is 404 NotFound naming the resource; creating in a missing
    namespace is 404 too."""
    reply = http.get(f"{widgets}/nope")
    assert reply.status == 404
    assert reply["message"] == 'widgets.test.streamherd.io "nope" not found'
    assert reply["details"] == {"name": "nope", "group": "test.streamherd.io", "kind": "widgets"}
    core = http.get("/api/v1/namespaces/default/pods/nope")
    assert core["message"] == 'pods "nope" not found'
    missing_ns = http.post("/api/v1/namespaces/ghost/configmaps", {"metadata": {"name": "c"}})
    assert missing_ns.status == 404
    assert missing_ns["message"] == 'namespaces "ghost" not found'


def test_stale_resource_version_is_a_409_conflict(http: KubeHTTP, widgets: str) -> None:
    """Optimistic concurrency: a write carrying a resourceVersion other than the stored one is
    rejected with 409 Conflict, for PUT and for patches alike; the current one succeeds."""
    created = http.post(widgets, widget("w1", size=1)).body
    stale = created["metadata"]["resourceVersion"]
    fresh = http.patch(f"{widgets}/w1", {"spec": {"size": 2}}).body
    assert fresh["metadata"]["resourceVersion"] != stale

    put_stale = http.put(f"{widgets}/w1", {**created, "spec": {"size": 3}})
    assert put_stale.status == 409
    assert put_stale.reason == "Conflict"
    assert put_stale["message"] == (
        'Operation cannot be fulfilled on widgets.test.streamherd.io "w1": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    patch_stale = http.patch(
        f"{widgets}/w1", {"metadata": {"resourceVersion": stale}, "spec": {"size": 3}}
    )
    assert patch_stale.status == 409
    assert http.get(f"{widgets}/w1")["spec"] == {"size": 2}

    put_fresh = http.put(f"{widgets}/w1", {**fresh, "spec": {"size": 4}})
    assert put_fresh.status == 200
    assert put_fresh["spec"] == {"size": 4}
    unconditional = http.put(f"{widgets}/w1", {**widget("w1"), "spec": {"size": 5}})
    assert unconditional.status == 422  # custom resources need a resourceVersion on PUT


def test_generation_counts_spec_changes_only(http: KubeHTTP, widgets: str) -> None:
    """metadata.generation increases on spec changes, not on metadata or status changes."""
    http.post(widgets, widget("w1", size=1))
    assert (
        http.patch(f"{widgets}/w1", {"metadata": {"labels": {"a": "b"}}})["metadata"]["generation"]
        == 1
    )
    assert (
        http.patch(f"{widgets}/w1/status", {"status": {"phase": "x"}})["metadata"]["generation"]
        == 1
    )
    assert http.patch(f"{widgets}/w1", {"spec": {"size": 2}})["metadata"]["generation"] == 2
    assert http.patch(f"{widgets}/w1", {"spec": {"size": 3}})["metadata"]["generation"] == 3


def test_a_no_op_write_keeps_the_resource_version(http: KubeHTTP, widgets: str) -> None:
    """A patch that changes nothing is not a write: same resourceVersion, no watch event."""
    created = http.post(widgets, widget("w1", size=1)).body
    same = http.patch(f"{widgets}/w1", {"spec": {"size": 1}}).body
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_status_subresource_separates_spec_and_status(http: KubeHTTP, widgets: str) -> None:
    """With a status subresource: status is dropped on create and ignored on writes to the
    object; writes to /status change the status only (metadata and spec changes ignored)."""
    body = {**widget("w1", size=1), "status": {"phase": "Sneaky"}}
    created = http.post(widgets, body).body
    assert "status" not in created
    main = http.patch(f"{widgets}/w1", {"spec": {"size": 2}, "status": {"phase": "Ignored"}})
    assert main["spec"] == {"size": 2}
    assert "status" not in main.body
    status = http.patch(
        f"{widgets}/w1/status",
        {"spec": {"size": 99}, "metadata": {"labels": {"x": "y"}}, "status": {"phase": "Ready"}},
    )
    assert status.status == 200
    assert status["status"] == {"phase": "Ready"}
    assert status["spec"] == {"size": 2}
    assert "labels" not in status["metadata"]
    again = http.patch(f"{widgets}/w1", {"spec": {"size": 3}, "status": None})
    assert again["status"] == {"phase": "Ready"}
    put_status = http.put(f"{widgets}/w1/status", {**again.body, "status": {"phase": "Done"}})
    assert put_status["status"] == {"phase": "Done"}
    assert put_status["spec"] == {"size": 3}
    assert http.get("/api/v1/namespaces/default/configmaps/x/status").status == 404


def test_merge_patch_follows_rfc7386(http: KubeHTTP, widgets: str) -> None:
    """JSON merge patch: maps merge, null deletes a key, lists are replaced whole.
    Strategic merge patch is accepted and applied the same way (documented simplification)."""
    http.post(widgets, widget("w1", a=1, b={"c": 1, "d": 2}, items=[1, 2, 3]))
    patched = http.patch(f"{widgets}/w1", {"spec": {"a": None, "b": {"c": 5}, "items": [9]}})
    assert patched["spec"] == {"b": {"c": 5, "d": 2}, "items": [9]}
    strategic = http.patch(f"{widgets}/w1", {"spec": {"b": {"d": None}}}, STRATEGIC)
    assert strategic["spec"] == {"b": {"c": 5}, "items": [9]}
    apply = http.patch(f"{widgets}/w1", {"spec": {}}, APPLY)
    assert apply.status == 400, "server-side apply needs a fieldManager"


APPLY = "application/apply-patch+yaml"


def test_server_side_apply_as_one_manager_sees_it(http: KubeHTTP, widgets: str) -> None:
    """The emulator's model of server-side apply (the real one: tests/controlplane): an apply
    creates; a later one removes what the same manager applied before and dropped, sets
    every field it applies again (an edit of them is reverted), leaves other fields alone."""

    def apply(spec: dict[str, Any]) -> Any:
        body = {**widget("w1"), "spec": spec}
        return http.request(
            "PATCH", f"{widgets}/w1", body, content_type=APPLY, params={"fieldManager": "op"}
        )

    created = apply({"a": 1, "b": {"c": 1, "d": 2}})
    assert created.status == 201
    http.patch(f"{widgets}/w1", {"spec": {"a": 7, "other": "kept"}})  # an edit, another field
    reapplied = apply({"a": 1, "b": {"c": 1}})
    assert reapplied.status == 200
    assert reapplied.body["spec"] == {"a": 1, "b": {"c": 1}, "other": "kept"}


def test_json_patch_with_a_resource_version_test(http: KubeHTTP, widgets: str) -> None:
    """JSON patch (RFC 6902) applies all ops or none; a failing `test` op (kopf tests
    /metadata/resourceVersion) is 422 Unprocessable Entity and changes nothing."""
    created = http.post(widgets, widget("w1", size=1)).body
    rv = created["metadata"]["resourceVersion"]
    ok = http.patch(
        f"{widgets}/w1",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
            {"op": "replace", "path": "/spec/size", "value": 2},
        ],
        JSON_PATCH,
    )
    assert ok.status == 200
    assert ok["metadata"]["finalizers"] == ["x/y"]
    assert ok["spec"]["size"] == 2
    stale = http.patch(
        f"{widgets}/w1",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "remove", "path": "/metadata/finalizers"},
        ],
        JSON_PATCH,
    )
    assert stale.status == 422
    assert http.get(f"{widgets}/w1")["metadata"]["finalizers"] == ["x/y"]
    bad_path = http.patch(f"{widgets}/w1", [{"op": "remove", "path": "/spec/nope"}], JSON_PATCH)
    assert bad_path.status == 422
    malformed = http.patch(f"{widgets}/w1", {"op": "add"}, JSON_PATCH)
    assert malformed.status == 400


def test_secrets_string_data_is_stored_as_base64_data(http: KubeHTTP) -> None:
    """Secret.stringData is write-only: the server merges it into base64 `data`."""
    reply = http.post(
        "/api/v1/namespaces/default/secrets",
        {"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "hello"}},
    )
    assert reply.status == 201
    assert reply["data"] == {"a": "eA==", "b": "aGVsbG8="}
    assert "stringData" not in reply.body
    assert reply["type"] == "Opaque"


def test_deployment_defaults_and_validation(http: KubeHTTP) -> None:
    """Built-in defaulting (replicas=1, RollingUpdate) and the selector-matches-labels rule."""
    deployments = "/apis/apps/v1/namespaces/default/deployments"
    good = {
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    created = http.post(deployments, good)
    assert created.status == 201
    assert created["spec"]["replicas"] == 1
    assert created["spec"]["strategy"]["type"] == "RollingUpdate"
    bad = {
        **good,
        "metadata": {"name": "e"},
        "spec": {**good["spec"], "selector": {"matchLabels": {"app": "other"}}},
    }
    rejected = http.post(deployments, bad)
    assert rejected.status == 422
    assert rejected["message"].startswith(
        'Deployment.apps "e" is invalid: spec.template.metadata.labels: Invalid value'
    )
    immutable = http.patch(
        f"{deployments}/d",
        {
            "spec": {
                "selector": {"matchLabels": {"app": "d", "x": "y"}},
                "template": {"metadata": {"labels": {"app": "d", "x": "y"}}},
            }
        },
        MERGE,
    )
    assert immutable.status == 422
    assert "field is immutable" in immutable["message"]
