"""Deletion: finalizers, preconditions, owner references and the garbage collector, namespaces."""

from __future__ import annotations

from typing import Any

from e2e.cluster.client import KubeHTTP
from e2e.cluster.processes import wait_until
from tests.cluster.conftest import widget

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def _owned_by(owner: dict[str, Any], name: str, controller: bool = True) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "metadata": {
            "name": name,
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": controller,
                    "blockOwnerDeletion": True,
                }
            ],
        }
    }


def test_finalizers_block_deletion_until_removed(http: KubeHTTP, widgets: str) -> None:
    """Deleting an object with finalizers only sets deletionTimestamp (it stays readable and
    writable, but no new finalizers may be added); removing the last finalizer deletes it."""
    body = widget("w1")
    body["metadata"]["finalizers"] = ["a.example.com/one", "b.example.com/two"]
    http.post(widgets, body)
    stream = http.watch(widgets)
    assert next(stream)["type"] == "ADDED"

    deleting = http.delete(f"{widgets}/w1")
    assert deleting.status == 200
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 0
    assert next(stream)["type"] == "MODIFIED"
    assert http.get(f"{widgets}/w1").status == 200
    assert http.delete(f"{widgets}/w1").status == 200  # deleting again changes nothing

    more = http.patch(
        f"{widgets}/w1",
        {
            "metadata": {
                "finalizers": ["a.example.com/one", "b.example.com/two", "c.example.com/new"]
            }
        },
    )
    assert more.status == 422
    assert "no new finalizers can be added if the object is being deleted" in more["message"]

    http.patch(f"{widgets}/w1", {"metadata": {"finalizers": ["b.example.com/two"]}})
    assert next(stream)["type"] == "MODIFIED"
    assert http.get(f"{widgets}/w1").status == 200
    last = http.patch(f"{widgets}/w1", {"metadata": {"finalizers": None}})
    assert last.status == 200
    gone = next(stream)
    assert gone["type"] == "DELETED"
    assert "finalizers" not in gone["object"]["metadata"]
    assert http.get(f"{widgets}/w1").status == 404
    stream.close()


def test_delete_preconditions(http: KubeHTTP, widgets: str) -> None:
    """DeleteOptions.preconditions (uid, resourceVersion) that do not hold are 409 Conflict."""
    created = http.post(widgets, widget("w1")).body
    wrong_uid = http.delete(f"{widgets}/w1", {"preconditions": {"uid": "not-it"}})
    assert wrong_uid.status == 409
    assert "Precondition failed: UID in precondition: not-it" in wrong_uid["message"]
    http.patch(f"{widgets}/w1", {"spec": {"size": 2}})
    stale = http.delete(
        f"{widgets}/w1",
        {"preconditions": {"resourceVersion": created["metadata"]["resourceVersion"]}},
    )
    assert stale.status == 409
    ok = http.delete(f"{widgets}/w1", {"preconditions": {"uid": created["metadata"]["uid"]}})
    assert ok.status == 200
    assert ok["status"] == "Success"  # immediately gone: a Status, not the object
    assert http.get(f"{widgets}/w1").status == 404


def test_background_cascading_deletion(http: KubeHTTP, widgets: str) -> None:
    """Background propagation (the default): the owner goes at once, then the garbage
    collector deletes dependents whose owners are all gone (honouring their finalizers)."""
    owner = http.post(widgets, widget("owner")).body
    other = http.post(widgets, widget("other")).body
    http.post(CONFIGMAPS, _owned_by(owner, "dep1"))
    blocked = _owned_by(owner, "dep2")
    blocked["metadata"]["finalizers"] = ["x.example.com/keep"]
    http.post(CONFIGMAPS, blocked)
    two_owners = _owned_by(owner, "dep3")
    two_owners["metadata"]["ownerReferences"] += _owned_by(other, "-", controller=False)[
        "metadata"
    ]["ownerReferences"]
    http.post(CONFIGMAPS, two_owners)

    assert http.delete(f"{widgets}/owner").status == 200
    assert http.get(f"{widgets}/owner").status == 404
    wait_until(lambda: http.get(f"{CONFIGMAPS}/dep1").status == 404)
    dep2 = wait_until(
        lambda: (
            http.get(f"{CONFIGMAPS}/dep2").body["metadata"].get("deletionTimestamp")
            and http.get(f"{CONFIGMAPS}/dep2")
        )
    )
    assert dep2["metadata"]["finalizers"] == ["x.example.com/keep"]
    assert http.get(f"{CONFIGMAPS}/dep3").status == 200  # it has another owner still
    http.delete(f"{widgets}/other")
    wait_until(lambda: http.get(f"{CONFIGMAPS}/dep3").status == 404)


def test_orphan_deletion_keeps_dependents(http: KubeHTTP, widgets: str) -> None:
    """propagationPolicy=Orphan: dependents survive, with the owner reference removed."""
    owner = http.post(widgets, widget("owner")).body
    http.post(CONFIGMAPS, _owned_by(owner, "dep"))
    http.delete(f"{widgets}/owner", {"propagationPolicy": "Orphan"})
    wait_until(lambda: http.get(f"{widgets}/owner").status == 404)
    dep = http.get(f"{CONFIGMAPS}/dep")
    assert dep.status == 200
    assert "ownerReferences" not in dep["metadata"]


def test_foreground_deletion_waits_for_dependents(http: KubeHTTP, widgets: str) -> None:
    """propagationPolicy=Foreground: the owner stays (deletionTimestamp, finalizer
    foregroundDeletion) until its dependents are gone."""
    owner = http.post(widgets, widget("owner")).body
    dep = _owned_by(owner, "dep")
    dep["metadata"]["finalizers"] = ["x.example.com/keep"]
    http.post(CONFIGMAPS, dep)
    deleting = http.delete(f"{widgets}/owner", {"propagationPolicy": "Foreground"})
    assert deleting["metadata"]["finalizers"] == ["foregroundDeletion"]
    wait_until(lambda: http.get(f"{CONFIGMAPS}/dep")["metadata"].get("deletionTimestamp"))
    assert http.get(f"{widgets}/owner").status == 200
    http.patch(f"{CONFIGMAPS}/dep", {"metadata": {"finalizers": None}})
    wait_until(lambda: http.get(f"{widgets}/owner").status == 404)


def test_dependents_of_a_missing_owner_are_collected(http: KubeHTTP) -> None:
    """An owner reference to an object that does not exist makes the dependent garbage."""
    ghost = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"},
    }
    assert http.post(CONFIGMAPS, _owned_by(ghost, "orphan")).status == 201
    wait_until(lambda: http.get(f"{CONFIGMAPS}/orphan").status == 404)


def test_namespace_deletion_empties_then_removes_it(http: KubeHTTP) -> None:
    """A deleted namespace is Terminating (no new objects: 403) until its contents are gone."""
    http.post("/api/v1/namespaces", {"metadata": {"name": "scratch"}})
    path = "/api/v1/namespaces/scratch/configmaps"
    keep = {"metadata": {"name": "keep", "finalizers": ["x.example.com/keep"]}}
    http.post(path, keep)
    http.post(path, {"metadata": {"name": "plain"}})
    terminating = http.delete("/api/v1/namespaces/scratch")
    assert terminating["status"]["phase"] == "Terminating"
    wait_until(lambda: http.get(f"{path}/plain").status == 404)
    refused = http.post(path, {"metadata": {"name": "late"}})
    assert refused.status == 403
    assert "because it is being terminated" in refused["message"]
    assert http.get("/api/v1/namespaces/scratch").status == 200
    http.patch(f"{path}/keep", {"metadata": {"finalizers": None}})
    wait_until(lambda: http.get("/api/v1/namespaces/scratch").status == 404)
    assert http.delete("/api/v1/namespaces/default").status == 403


def test_delete_collection_by_label(http: KubeHTTP, widgets: str) -> None:
    for name, labels in [("a", {"x": "1"}), ("b", {"x": "1"}), ("c", {"x": "2"})]:
        http.post(widgets, widget(name, labels))
    reply = http.delete(widgets, labelSelector="x=1")
    assert reply.status == 200
    assert sorted(i["metadata"]["name"] for i in reply["items"]) == ["a", "b"]
    assert [i["metadata"]["name"] for i in http.get(widgets)["items"]] == ["c"]
